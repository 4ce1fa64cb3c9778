"""Pod fields a WorkerPool passes to its Deployment, validated as Kubernetes would.

The API server must refuse at apply what the Deployment would later refuse, naming
the field. Structured fields (security context, tolerations, affinity, envFrom,
valueFrom) use Kubernetes' own schemas, stored in ``kubeschemas.json`` (see
``celeriac.operator.kubeschemas``). What Kubernetes checks in code rather than in
its schema (quantities, label keys and values, environment variable names) is
checked by the CRD where the API server's rule budget allows (quantities by pattern, label
values by pattern) and always in Python, so the operator reports an invalid spec
instead of failing on the Deployment (label and annotation keys: a regex over map
keys of unknown length is beyond the API server's budget for CEL rules).
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from importlib import resources
from typing import Annotated, Any

from pydantic import AfterValidator, StrictFloat, StrictInt, StrictStr, WithJsonSchema

# resource.Quantity's text form, without a sign: requests and limits are never negative.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A label value, and a label or annotation key: an optional DNS-subdomain prefix and "/".
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# Any printable ASCII character except "=", as Kubernetes accepts for variable names.
ENV_NAME_PATTERN = r"^[ -<>-~]+$"
_QUANTITY, _LABEL_VALUE, _LABEL_KEY = map(
    re.compile, (QUANTITY_PATTERN, LABEL_VALUE_PATTERN, LABEL_KEY_PATTERN)
)


@cache
def kube_schema(name: str) -> dict[str, Any]:
    """Kubernetes' schema of core/v1 ``name``, as stored for the CRD."""
    text = resources.files("celeriac.protocol").joinpath("kubeschemas.json").read_text()
    schema: dict[str, Any] = json.loads(text)[name]
    return schema


def quantity_text(amount: int | float | str) -> str:
    """An amount as the text Kubernetes clients send (``0.5`` -> ``"0.5"``)."""
    return amount if isinstance(amount, str) else repr(amount)


def _check_quantities(
    value: dict[str, int | float | str],
) -> dict[str, int | float | str]:
    for name, amount in value.items():
        if isinstance(amount, str):
            valid = len(amount) <= 64 and bool(_QUANTITY.match(amount))
        else:
            valid = not isinstance(amount, bool) and math.isfinite(amount) and amount >= 0
        if not valid:
            raise ValueError(f"{name}: {amount!r} is not a quantity >= 0 (e.g. 500m, 0.5, 2, 1Gi)")
    return value


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    for key, text in value.items():
        if not _valid_key(key):
            raise ValueError(f"{key!r} is not a valid label key")
        if len(text) > 63 or not _LABEL_VALUE.match(text):
            raise ValueError(f"{text!r} (for {key!r}) is not a valid label value")
    return value


def _check_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not _valid_key(key):
            raise ValueError(f"{key!r} is not a valid annotation key")
    return value


def _valid_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return len(prefix) <= 253 and len(name) <= 63 and bool(_LABEL_KEY.match(key))


Quantities = Annotated[
    # Strict: true is not the number 1.
    dict[str, StrictInt | StrictFloat | StrictStr],
    AfterValidator(_check_quantities),
    WithJsonSchema(
        {
            "type": "object",
            # As in a Pod, an amount is a number (0.5, 2) or a string (500m, 1Gi). A
            # CRD value of either type has no type of its own; the pattern applies to
            # strings, the minimum to numbers. Other JSON (true, a list) passes the API
            # server and the operator reports it as an invalid spec.
            "additionalProperties": {
                "x-kubernetes-preserve-unknown-fields": True,
                "pattern": QUANTITY_PATTERN,
                "maxLength": 64,
                "minimum": 0,
            },
            "maxProperties": 32,
        }
    ),
]
Labels = Annotated[
    dict[str, str],
    AfterValidator(_check_labels),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {
                "type": "string",
                "maxLength": 63,
                "pattern": LABEL_VALUE_PATTERN,
            },
            "maxProperties": 64,
        }
    ),
]
Annotations = Annotated[
    dict[str, str],
    AfterValidator(_check_keys),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "maxProperties": 64,
        }
    ),
]

# Passed through to the pod as written; the API server checks them against these schemas.
PodSecurityContext = Annotated[dict[str, Any], WithJsonSchema(kube_schema("PodSecurityContext"))]
Toleration = Annotated[dict[str, Any], WithJsonSchema(kube_schema("Toleration"))]
Affinity = Annotated[dict[str, Any], WithJsonSchema(kube_schema("Affinity"))]
EnvFromSource = Annotated[dict[str, Any], WithJsonSchema(kube_schema("EnvFromSource"))]
EnvVarSource = Annotated[dict[str, Any], WithJsonSchema(kube_schema("EnvVarSource"))]
