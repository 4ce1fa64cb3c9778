"""Rendering the chart for tests: helm itself, and a YAML loader that rejects duplicate keys."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from celeriac_devenv.building import ensure_binaries
from celeriac_devenv.chart import CHART_DIR, set_flags


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that fails on a key given twice (PyYAML keeps the last silently)."""


def _no_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dupes:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {dupes}", node.start_mark
        )
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def helm_binary() -> Path:
    """The helm built for the local environment."""
    return ensure_binaries(["helm"], quiet=True)["helm"]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm without a cluster (template, lint)."""
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render(values: dict[str, Any], release: str = "demo", namespace: str = "celeriac-system"
           ) -> list[dict[str, Any]]:  # fmt: skip
    """The chart's objects for ``values``; AssertionError with helm's message on failure."""
    proc = helm("template", release, str(CHART_DIR), "-n", namespace, *set_flags(values))
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.load_all(proc.stdout, Loader=StrictLoader) if d]


def render_error(values: dict[str, Any]) -> str:
    """helm's error message for values that must be rejected."""
    proc = helm("template", "demo", str(CHART_DIR), *set_flags(values))
    assert proc.returncode != 0, f"values were accepted: {values}"
    return proc.stderr


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Objects grouped by kind."""
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator Deployment among rendered objects."""
    [dep] = [
        o for o in by_kind(objects)["Deployment"] if o["metadata"]["name"].endswith("-operator")
    ]
    return dep


def manifest_objects(env: Any, release: str, namespace: str) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every object a release installed (``helm get manifest``)."""
    out = env.helm("get", "manifest", release, "-n", namespace).stdout
    objects = []
    for doc in yaml.safe_load_all(out):
        if doc:
            meta = doc["metadata"]
            objects.append((doc["kind"], meta.get("namespace", ""), meta["name"]))
    return objects


def exists(env: Any, kind: str, namespace: str, name: str) -> bool:
    """True when the object is there (``kubectl get``)."""
    scope = ["-n", namespace] if namespace else []
    proc = env.kubectl("get", kind, name, *scope, "-o", "name", check=False)
    if proc.returncode != 0 and "NotFound" not in proc.stderr:
        raise AssertionError(proc.stderr)
    return proc.returncode == 0
