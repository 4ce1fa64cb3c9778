"""Generates ``docs/crd-reference.md`` from the same schemas as the CRDs.

One table per resource part (spec, status) lists every field with its type,
default, constraints and description, followed by the cross-field (CEL) rules,
so the reference can never disagree with what the API server enforces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_CONSTRAINTS = (
    ("minimum", ">= {}"),
    ("maximum", "<= {}"),
    ("minLength", "length >= {}"),
    ("maxLength", "length <= {}"),
    ("minItems", "items >= {}"),
    ("maxItems", "items <= {}"),
    ("pattern", "matches `{}`"),
)


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (Kubernetes)"
    kind = str(node.get("type", "any"))
    if kind == "array":
        return f"array of {_type(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = [fmt.format(node[key]) for key, fmt in _CONSTRAINTS if key in node]
    items = node.get("items")
    if isinstance(items, dict) and "pattern" in items:
        parts.append(f"each matches `{items['pattern']}`")
    return ", ".join(parts).replace("|", "\\|")


def _rows(node: dict[str, Any], prefix: str, required: set[str]) -> list[str]:
    rows = []
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        default = f"`{sub['default']}`" if "default" in sub else ""
        need = "yes" if name in required else ""
        desc = str(sub.get("description", "")).replace("\n", " ").replace("|", "\\|")
        rows.append(
            f"| `{path}` | {_type(sub)} | {need} | {default} | {_constraints(sub)} | {desc} |"
        )
        if sub.get("type") == "object" and "properties" in sub:
            rows += _rows(sub, path, set(sub.get("required", [])))
    return rows


def _rules(node: dict[str, Any], prefix: str) -> list[str]:
    out = [f"- `{prefix}`: {rule['message']}" for rule in node.get("x-kubernetes-validations", [])]
    for name, sub in node.get("properties", {}).items():
        out += _rules(sub, f"{prefix}.{name}")
    return out


def _section(crd: dict[str, Any]) -> list[str]:
    names = crd["spec"]["names"]
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    lines = [
        f"## {names['kind']}",
        "",
        f"`{crd['spec']['group']}/{version['name']}`, namespaced, short name "
        f"`{names['shortNames'][0]}`. {schema.get('description', '')}",
        "",
    ]
    header = [
        "| Field | Type | Required | Default | Constraints | Description |",
        "|---|---|---|---|---|---|",
    ]
    for part in ("spec", "status"):
        node = schema["properties"][part]
        lines += [f"### {part}", "", *header, *_rows(node, part, set(node.get("required", [])))]
        lines.append("")
    rules = _rules(schema, "")
    if rules:
        lines += ["### Cross-field rules (checked by the API server)", "", *rules, ""]
    columns = ", ".join(c["name"] for c in version["additionalPrinterColumns"])
    lines += [f"`kubectl get {names['shortNames'][0]}` columns: {columns}.", ""]
    return lines


def render(crds: Sequence[dict[str, Any]]) -> str:
    """The whole reference page for ``crds`` (the generated CustomResourceDefinitions)."""
    lines = [
        "# Custom resource reference",
        "",
        "Generated from `celeriac/protocol/resources.py` by "
        "`python -m celeriac.operator.crdgen`; do not edit by hand.",
        "Durations are strings of numbers with units `ms`, `s`, `m`, `h`, `d` "
        "(e.g. `30s`, `1h30m`, `7d`).",
        "",
    ]
    for crd in crds:
        lines += _section(crd)
    return "\n".join(lines).rstrip() + "\n"
