"""Generates the CustomResourceDefinitions in ``crds/`` from the pydantic models.

The models in :mod:`celeriac.protocol.resources` are the one source of truth; this
module turns their JSON schema into Kubernetes *structural* schemas (no ``$ref``,
no ``anyOf`` for optional fields, no ``null`` defaults) and adds what only a CRD
has: subresources, printer columns, short names and root-level CEL rules.

``python -m celeriac.operator.crdgen [--check] [DIR]`` rewrites (or checks) the files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from celeriac.operator import crddocs
from celeriac.protocol import resources as r

# JSON-schema keys that mean the same in a Kubernetes structural schema.
_KEPT = {
    "type", "description", "properties", "required", "items", "additionalProperties",
    "enum", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "format", "nullable",
    "minProperties", "maxProperties",
}  # fmt: skip


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` / ``allOf[$ref]``, merging the referring node's own keys on top."""
    ref_holder = node
    if "allOf" in node and len(node["allOf"]) == 1:
        ref_holder = node["allOf"][0]
    if "$ref" not in ref_holder:
        return node
    target = defs[ref_holder["$ref"].rsplit("/", 1)[-1]]
    merged = {**_resolve(target, defs)}
    merged.update({k: v for k, v in node.items() if k not in ("$ref", "allOf")})
    return merged


def _drop_null(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` (an optional field) becomes X; the field is simply omitted."""
    variants = node.get("anyOf")
    if not variants:
        return node
    real = [v for v in variants if v.get("type") != "null"]
    if len(real) != 1:
        raise ValueError(f"cannot express anyOf {variants} in a structural schema")
    out = {k: v for k, v in node.items() if k != "anyOf"}
    return {**real[0], **out}


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON-schema node (from pydantic) as a structural OpenAPI v3 schema node."""
    node = _resolve(_drop_null(_resolve(node, defs)), defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "default" and value is None:
            continue
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in _KEPT:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of a pydantic model (by alias, i.e. camelCase)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def _column(name: str, json_path: str, kind: str = "integer", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": json_path, **extra}


_AGE = _column("Age", ".metadata.creationTimestamp", "date")


def _root_schema(
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    rules: list[dict[str, str]],
) -> dict[str, Any]:
    spec_schema = model_schema(spec)
    if "required" not in spec_schema:
        spec_schema["default"] = spec().model_dump(by_alias=True, exclude_none=True)
    root: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": model_schema(status),
        },
    }
    if "required" in spec_schema:
        root["required"] = ["spec"]
    if rules:
        root["x-kubernetes-validations"] = rules
    return root


def _crd(
    kind: str,
    *,
    plural: str,
    short: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    subresources: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{r.GROUP}"},
        "spec": {
            "group": r.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["celeriac"],
            },
            "versions": [
                {
                    "name": r.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def taskqueue_crd() -> dict[str, Any]:
    """The TaskQueue CRD."""
    columns = [
        _column("Queue", ".status.queue", "string"),
        _column("Backlog", ".status.backlog"),
        _column("In-Flight", ".status.inFlight"),
        _column("Dead-Letters", ".status.deadLetters"),
        _column("Ready", '.status.conditions[?(@.type=="Ready")].status', "string"),
        _AGE,
    ]
    schema = _root_schema(
        "A Celeriac queue: the operator keeps its JetStream streams and consumer in line.",
        r.TaskQueueSpec,
        r.TaskQueueStatus,
        r.TASKQUEUE_ROOT_RULES,
    )
    return _crd(
        "TaskQueue",
        plural="taskqueues",
        short="tq",
        schema=schema,
        columns=columns,
        subresources={"status": {}},
    )


def workerpool_crd() -> dict[str, Any]:
    """The WorkerPool CRD, with a scale subresource for ``kubectl scale wp``."""
    columns = [
        _column("Queues", ".spec.queues", "string"),
        _column("Desired", ".status.desiredReplicas"),
        _column("Ready", ".status.readyReplicas"),
        _column("Min", ".spec.autoscaling.minReplicas"),
        _column("Max", ".spec.autoscaling.maxReplicas"),
        _column("Backlog", ".status.backlog", priority=1),
        _column("Reason", ".status.lastScaleReason", "string", priority=1),
        _AGE,
    ]
    scale = {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    schema = _root_schema(
        "Celeriac workers for some queues, scaled on their backlog.",
        r.WorkerPoolSpec,
        r.WorkerPoolStatus,
        r.WORKERPOOL_ROOT_RULES,
    )
    return _crd(
        "WorkerPool",
        plural="workerpools",
        short="wp",
        schema=schema,
        columns=columns,
        subresources={"status": {}, "scale": scale},
    )


def taskschedule_crd() -> dict[str, Any]:
    """The TaskSchedule CRD."""
    columns = [
        _column("Schedule", ".status.schedule", "string"),
        _column("Time-Zone", ".spec.timeZone", "string"),
        _column("Suspend", ".spec.suspend", "boolean"),
        _column("Last", ".status.lastScheduleTime", "date"),
        # A date column shows ages, which a future time does not have: the time itself.
        _column("Next", ".status.nextScheduleTime", "string"),
        _column("Last-State", ".status.lastRun.state", "string"),
        _column("Task", ".spec.task.name", "string", priority=1),
        _column("Runs", ".status.runs", priority=1),
        _column("Skips", ".status.skips", priority=1),
        _AGE,
    ]
    schema = _root_schema(
        "A recurring Celeriac task: nats-server holds its schedule and fires it.",
        r.TaskScheduleSpec,
        r.TaskScheduleStatus,
        r.TASKSCHEDULE_ROOT_RULES,
    )
    return _crd(
        "TaskSchedule",
        plural="taskschedules",
        short="ts",
        schema=schema,
        columns=columns,
        subresources={"status": {}},
    )


_HEADER = (
    "# Generated from celeriac/protocol/resources.py by `python -m celeriac.operator.crdgen`.\n"
)


def render(crd: dict[str, Any]) -> str:
    """A CRD as the YAML text stored in ``crds/``."""
    return _HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)


def all_crds() -> list[dict[str, Any]]:
    """Every CustomResourceDefinition Celeriac installs."""
    return [taskqueue_crd(), workerpool_crd(), taskschedule_crd()]


def rendered_files() -> dict[str, str]:
    """File name -> content of every generated CRD file."""
    return {f"{crd['metadata']['name']}.yaml": render(crd) for crd in all_crds()}


def stale_files(directory: Path, docs: Path | None = None) -> list[str]:
    """Generated files (CRDs in ``directory``, and ``docs``) that are missing or out of date."""
    wanted = {directory / name: text for name, text in rendered_files().items()}
    if docs is not None:
        wanted[docs] = crddocs.render(all_crds())
    return [str(p) for p, text in wanted.items() if not p.exists() or p.read_text() != text]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the CRDs to DIR (default ``crds``) and the reference; ``--check`` reports drift."""
    parser = argparse.ArgumentParser(prog="python -m celeriac.operator.crdgen")
    parser.add_argument("directory", nargs="?", default="crds", type=Path)
    parser.add_argument("--docs", type=Path, default=Path("docs/crd-reference.md"))
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    ns = parser.parse_args(argv)
    if ns.check:
        stale = stale_files(ns.directory, ns.docs)
        for path in stale:
            print(f"{path} is out of date; run python -m celeriac.operator.crdgen")
        return 1 if stale else 0
    ns.directory.mkdir(parents=True, exist_ok=True)
    outputs = {ns.directory / name: text for name, text in rendered_files().items()}
    outputs[ns.docs] = crddocs.render(all_crds())
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
