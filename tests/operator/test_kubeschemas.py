"""Kubernetes' schemas for pass-through pod fields, made fit for a CRD."""

from __future__ import annotations

import json
from typing import Any

import pytest

from celeriac.operator import kubeschemas

P = "#/components/schemas/"
INTSTR = P + "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
INNER = P + "io.k8s.api.core.v1.Inner"

DOC: dict[str, Any] = {
    "components": {
        "schemas": {
            "io.k8s.api.core.v1.Toleration": {
                "description": "d",
                "type": "object",
                "properties": {
                    "key": {"type": "string", "default": ""},
                    "seconds": {"type": "integer", "format": "int64"},
                    "port": {"allOf": [{"$ref": INTSTR}]},
                    "inner": {"description": "x", "allOf": [{"$ref": INNER}]},
                    "items": {"type": "array", "items": {"$ref": INNER},
                              "x-kubernetes-list-type": "atomic"},
                },
            },
            "io.k8s.api.core.v1.Inner": {"type": "object", "properties": {"a": {"type": "string"}}},
            "io.k8s.api.core.v1.Loop": {"type": "object", "properties": {
                "self": {"$ref": P + "io.k8s.api.core.v1.Loop"}}},
        }
    }
}  # fmt: skip


def test_extract_inlines_references_and_drops_what_a_crd_must_not_carry() -> None:
    out = kubeschemas.extract(DOC, ["Toleration"])["Toleration"]
    inner = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert out == {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "seconds": {"type": "integer", "format": "int64"},
            "port": {"x-kubernetes-int-or-string": True},
            "inner": inner,
            "items": {"type": "array", "items": inner},
        },
    }


def test_a_recursive_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="recursive"):
        kubeschemas.extract(DOC, ["Loop"])


def test_the_stored_copy_has_every_type_and_no_references() -> None:
    stored = json.loads(kubeschemas.STORED.read_text())
    assert set(stored) == set(kubeschemas.TYPES)
    text = json.dumps(stored)
    assert "$ref" not in text and '"default"' not in text and '"description"' not in text
