"""Building blocks of the custom resource models: durations, CEL rules, conditions.

Kept apart from :mod:`celeriac.protocol.resources` so that module reads as the list
of resource fields. Imports only the standard library and pydantic.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

# Durations are written like Go/Kubernetes durations, plus days: "500ms", "30s", "1h30m", "7d".
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
DURATION_RE = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# A CEL expression true when a duration string is zero ("0s", "0m0s", ...).
ZERO_DURATION_CEL = "'^(0+(\\\\.0+)?(ms|s|m|h|d))+$'"


def parse_duration(text: str) -> float:
    """Seconds in a duration string such as ``"1h30m"``; ValueError names what is wrong."""
    if not DURATION_RE.match(text):
        raise ValueError(
            f"invalid duration {text!r}: use numbers with units (ms, s, m, h, d), e.g. 30s or 1h30m"
        )
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in DURATION_PART_RE.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest exact duration string for ``seconds`` (inverse of :func:`parse_duration`)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{round(seconds * 1000)}ms" if seconds else "0s"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` rule; ``field_path`` says which field it is about."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """A model's ``json_schema_extra`` carrying CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


class KubeModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


def object_default(model: type[BaseModel]) -> dict[str, Any]:
    """A field's ``json_schema_extra`` whose default is the model's full default."""
    # The whole default object, so the API server's CEL checks of the default itself pass.
    return {"default": model().model_dump(by_alias=True, exclude_none=True)}


# ---------------------------------------------------------------------------- conditions


class Condition(KubeModel):
    """One status condition, following the Kubernetes API conventions."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", max_length=1024, description="One CamelCase word saying why.")
    message: str = Field(default="", max_length=32768, description="Details for humans.")
    last_transition_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(default=None, ge=0)


CONDITIONS_LIST: dict[str, JsonValue] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
