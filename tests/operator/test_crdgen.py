"""The CRDs in crds/ (and the chart's copy) match the models; their schemas are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from celeriac.operator import crdgen

ROOT = Path(__file__).resolve().parents[2]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return []
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_crds_folder_is_up_to_date() -> None:
    assert crdgen.stale_files(ROOT / "crds", ROOT / "docs" / "crd-reference.md") == [], (
        "crds/ or docs/crd-reference.md is out of date: run python -m celeriac.operator.crdgen"
    )


def test_chart_crds_match_when_the_chart_exists() -> None:
    chart = ROOT / "helm" / "celeriac" / "crds"
    if not chart.is_dir():
        pytest.skip("no helm/celeriac/crds in this tree")
    for name, text in crdgen.rendered_files().items():
        assert yaml.safe_load((chart / name).read_text()) == yaml.safe_load(text), name


@pytest.mark.parametrize("crd", [crdgen.taskqueue_crd(), crdgen.workerpool_crd()])
def test_schema_is_structural(crd: dict[str, Any]) -> None:
    for path, node in _walk(_schema(crd)):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & node.keys(), path
        opaque = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert "type" in node or opaque, f"{path} has no type"
        assert node.get("default", 0) is not None, f"{path} has a null default"


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    args = [str(tmp_path / "crds"), "--docs", str(tmp_path / "ref.md")]
    assert crdgen.main(["--check", *args]) == 1
    assert crdgen.main(args) == 0
    assert crdgen.main(["--check", *args]) == 0
    (tmp_path / "ref.md").write_text("edited by hand")
    assert crdgen.main(["--check", *args]) == 1


def test_workerpool_scale_subresource_and_columns() -> None:
    version = crdgen.workerpool_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert names == ["Queues", "Desired", "Ready", "Min", "Max", "Age"]


def test_taskqueue_columns_and_names() -> None:
    crd = crdgen.taskqueue_crd()
    assert crd["spec"]["names"]["shortNames"] == ["tq"]
    assert crd["spec"]["group"] == "celeriac.io"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Backlog", "In-Flight", "Dead-Letters", "Age"} <= set(names)


def test_nested_defaults_apply_to_omitted_objects() -> None:
    spec = _schema(crdgen.taskqueue_crd())["properties"]["spec"]
    assert spec["default"]["deletionPolicy"] == "Retain"
    assert spec["properties"]["delivery"]["default"]["ackWait"] == "30s"
    assert spec["properties"]["delivery"]["properties"]["ackWait"]["default"] == "30s"
