"""Kubernetes' own schemas for the pod fields a WorkerPool passes through.

A WorkerPool's securityContext, tolerations, affinity, envFrom and valueFrom go into
its Deployment unchanged. Their schemas come from the API server's OpenAPI document
(``/openapi/v3/api/v1``), so the API server refuses at apply what a Deployment would
refuse, naming the field. ``extract`` turns those definitions into what a CRD schema
accepts (references inlined; no descriptions, defaults or merge annotations), and
``python -m celeriac.operator.kubeschemas OPENAPI.json`` rewrites the stored copy,
``celeriac/protocol/kubeschemas.json``; an end-to-end test compares it with the
running API server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PREFIX = "io.k8s.api.core.v1."
# The definitions WorkerPool fields use, by the name the protocol refers to them.
TYPES = ("PodSecurityContext", "Toleration", "Affinity", "EnvFromSource", "EnvVarSource")
STORED = Path(__file__).resolve().parents[1] / "celeriac" / "protocol" / "kubeschemas.json"
_REF = "#/components/schemas/"
# Types the API server validates in Go: in a CRD they are integers or strings.
_INT_OR_STRING = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
}
# Annotations for server-side apply and strategic merge, meaningless here; defaults,
# which would make the API server fill fields in.
_DROPPED = {
    "description",
    "default",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-unions",
}


def _inline(node: Any, schemas: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, schemas, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if ref is None and len(node.get("allOf", [])) == 1 and "$ref" in node["allOf"][0]:
        ref = node["allOf"][0]["$ref"]  # {"allOf": [{"$ref": ...}], "description": ...}
    if ref is not None:
        name = ref.removeprefix(_REF)
        if name in _INT_OR_STRING:
            return {"x-kubernetes-int-or-string": True}
        if name in seen:
            raise ValueError(f"recursive schema {name}: cannot inline it in a CRD")
        return _inline(schemas[name], schemas, (*seen, name))
    return {k: _inline(v, schemas, seen) for k, v in node.items() if k not in _DROPPED}


def extract(openapi: Mapping[str, Any], types: Sequence[str] = TYPES) -> dict[str, Any]:
    """``types`` (core/v1 names) from an OpenAPI v3 document, ready for a CRD schema."""
    schemas = openapi["components"]["schemas"]
    return {name: _inline(schemas[PREFIX + name], schemas, (PREFIX + name,)) for name in types}


def render(extracted: Mapping[str, Any]) -> str:
    """The stored file's text."""
    return json.dumps(extracted, indent=1, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the stored schemas from an OpenAPI v3 document (a file, or - for stdin)."""
    parser = argparse.ArgumentParser(prog="python -m celeriac.operator.kubeschemas")
    parser.add_argument("openapi", help="the API server's /openapi/v3/api/v1 as JSON")
    ns = parser.parse_args(argv)
    text = sys.stdin.read() if ns.openapi == "-" else Path(ns.openapi).read_text()
    STORED.write_text(render(extract(json.loads(text))))
    print(f"wrote {STORED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
