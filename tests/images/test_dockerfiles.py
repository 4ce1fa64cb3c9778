"""The Dockerfiles, without a container engine: what they copy builds, what they run runs.

Each build stage's COPY sources are staged exactly as the Dockerfile lists them, a
wheel is built from that and installed apart from the checkout, and the commands
the images run (``celeriac operator``, ``celeriac worker``) are run from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from celeriac.operator import manifests

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction and its stage (0 is the first FROM)."""

    stage: int
    keyword: str
    args: str


def parse(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, continuation lines joined."""
    out, stage, pending = [], -1, ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if line.endswith("\\"):
            continue
        keyword, _, args = pending.strip().partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword.upper(), args.strip()))
    return out


def copy_sources(instructions: list[Instruction], stage: int) -> list[tuple[str, str]]:
    """(source, destination) of the plain COPY instructions of a stage."""
    pairs = []
    for ins in instructions:
        if ins.stage == stage and ins.keyword == "COPY" and "--from" not in ins.args:
            *sources, dest = ins.args.split()
            pairs += [(src, dest) for src in sources]
    return pairs


def value(instructions: list[Instruction], keyword: str) -> str:
    """The last value of ``keyword`` (the one that counts) in the final stage."""
    last = max(i.stage for i in instructions)
    [*_, found] = [i.args for i in instructions if i.stage == last and i.keyword == keyword]
    return found


def stage(pairs: list[tuple[str, str]], into: Path) -> None:
    """Copy sources as Docker would (symlinks kept, relative to the build context)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src, dest in pairs:
        source = ROOT / src
        assert source.exists(), f"COPY source {src} does not exist"
        target = into / dest / (source.name if dest.endswith("/") and source.is_file() else "")
        if dest in ("./", "."):
            target = into / source.name
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, ignore=ignore)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Celeriac built from what images/worker/Dockerfile copies, installed into a folder."""
    tmp = tmp_path_factory.mktemp("image")
    src, wheels, site = tmp / "src", tmp / "wheels", tmp / "site"
    src.mkdir()
    stage(copy_sources(parse(IMAGES / "worker" / "Dockerfile"), 0), src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(src)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("celeriac-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    yield site


def run_installed(site: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed console script with the installed package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [str(site / "bin" / "celeriac"), *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_both_images_copy_the_same_sources() -> None:
    operator = copy_sources(parse(IMAGES / "operator" / "Dockerfile"), 0)
    worker = copy_sources(parse(IMAGES / "worker" / "Dockerfile"), 0)
    assert operator == worker
    assert {src for src, _ in operator} >= {"pyproject.toml", "celeriac", "operator"}


def test_operator_image_runs_what_the_chart_runs(installed: Path, tmp_path: Path) -> None:
    ins = parse(IMAGES / "operator" / "Dockerfile")
    entry = yaml.safe_load(value(ins, "ENTRYPOINT")) + yaml.safe_load(value(ins, "CMD"))
    assert entry == ["celeriac", "operator"]  # the chart's command
    assert value(ins, "USER") == str(manifests.DEFAULT_UID)
    values = yaml.safe_load((ROOT / "helm" / "celeriac" / "values.yaml").read_text())
    assert value(ins, "EXPOSE") == str(values["operator"]["healthPort"])
    proc = run_installed(installed, "operator", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--nats-url" in proc.stdout and "--lease-name" in proc.stdout


def test_operator_image_runs_the_charts_dashboard(installed: Path, tmp_path: Path) -> None:
    dashboard = (ROOT / "helm" / "celeriac" / "templates" / "dashboard.yaml").read_text()
    assert "command: [celeriac, dashboard, --host, 0.0.0.0, --port" in dashboard
    proc = run_installed(installed, "dashboard", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--host" in proc.stdout and "--port" in proc.stdout and "--read-only" in proc.stdout


def test_operator_image_runs_the_charts_gateway(installed: Path, tmp_path: Path) -> None:
    gateway = (ROOT / "helm" / "celeriac" / "templates" / "gateway.yaml").read_text()
    assert "command: [celeriac, gateway, --host, 0.0.0.0, --port" in gateway
    proc = run_installed(installed, "gateway", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--host" in proc.stdout and "--max-body" in proc.stdout


def test_worker_image_runs_what_worker_pools_run(installed: Path, tmp_path: Path) -> None:
    ins = parse(IMAGES / "worker" / "Dockerfile")
    assert yaml.safe_load(value(ins, "ENTRYPOINT")) == ["celeriac"]
    assert value(ins, "USER") == str(manifests.DEFAULT_UID)
    assert value(ins, "EXPOSE") == str(manifests.HEALTH_PORT)
    assert value(ins, "WORKDIR") == "/app"
    proc = run_installed(installed, "worker", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "-A MODULE[:APP]" in proc.stdout
    assert run_installed(installed, "--version", cwd=tmp_path).stdout.startswith("celeriac ")


def test_extended_worker_image_finds_the_task_code(installed: Path, tmp_path: Path) -> None:
    """images/shop-worker copies the shop into the base image's WORKDIR; the worker loads it."""
    ins = parse(IMAGES / "shop-worker" / "Dockerfile")
    assert ins[0].keyword == "ARG" and "celeriac-worker" in ins[0].args
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    stage(copy_sources(ins, 0), app_dir)
    pool = yaml.safe_load((ROOT / "examples" / "workerpool.yaml").read_text())
    assert pool["spec"]["image"] == "ghcr.io/example/shop:1.0"
    script = (
        "from celeriac.worker_runtime.loading import load_app\n"
        f"app = load_app({pool['spec']['app']!r})\n"
        "import celeriac; print(app.name, sorted(app.tasks), celeriac.__file__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=app_dir, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    tasks = ["shop.tasks.order_total", "shop.tasks.send_digest", "shop.tasks.send_receipt"]
    assert proc.stdout.startswith(f"shop {tasks}")
    assert str(installed) in proc.stdout  # the installed copy, not the checkout


# The operator image also runs the chart's dashboard and gateway.
@pytest.mark.parametrize(
    ("image", "extra"), [("worker", "worker"), ("operator", "operator,dashboard,gateway")]
)
def test_images_install_their_extra_and_no_local_environment(
    installed: Path, image: str, extra: str
) -> None:
    ins = parse(IMAGES / image / "Dockerfile")
    runs = " ".join(i.args for i in ins if i.keyword == "RUN")
    assert f"'.[{extra}]'" in runs  # the wheels of the extra's dependencies are built
    assert f"'celeriac[{extra}]'" in runs  # and installed
    assert not list(installed.glob("celeriac_devenv*"))
    assert not (installed / "celeriac" / "devenv").exists()
    assert not (installed / "bin" / "celeriac-devenv").exists()
