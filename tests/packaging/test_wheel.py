"""``pip install celeriac`` from the built wheel, in a fresh virtualenv, is the SDK alone.

The wheel is built from the sources, installed without extras into an empty venv
(pydantic, nats-py and cronsim come from the package index), and used from there to submit a
task and read its result against a real nats-server, with a worker running from the
development environment. kopf, kubernetes, aiohttp and the local environment are
never installed nor imported, and the worker and the operator name the extra they need.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import StartWorker, WorkerApp

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "celeriac", "operator", "worker_runtime")
HEAVY = ("kopf", "kubernetes", "aiohttp", "prometheus_client", "yaml", "celeriac_devenv")


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The celeriac wheel, built from a copy of the sources (the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(path, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--wheel-dir", tmp / "dist", src)
    [built] = (tmp / "dist").glob("celeriac-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv with ``pip install <wheel>`` and nothing else."""
    env = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", env)
    run(env / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "-q", "install", wheel)
    yield env
    shutil.rmtree(env, ignore_errors=True)


def test_wheel_holds_the_sdk_worker_and_operator_but_not_the_local_environment(
    wheel: Path,
) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(zf.read(meta).decode())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"celeriac"}
    assert "celeriac/worker_runtime/worker.py" in names
    assert "celeriac/operator/handlers.py" in names
    # Every package of the source tree is in the wheel, with the dashboard's page.
    sources = Path(__file__).resolve().parents[2] / "celeriac"
    packages = {
        p.parent.relative_to(sources.parent).as_posix() for p in sources.rglob("__init__.py")
    }
    assert packages <= {n.rsplit("/", 1)[0] for n in names}
    assert "celeriac/dashboard/static/index.html" in names
    assert not [n for n in names if "devenv" in n]
    requires = metadata.get_all("Requires-Dist") or []
    base = sorted(r.split(">")[0] for r in requires if "extra ==" not in r)
    assert base == ["cronsim", "nats-py", "pydantic"]
    assert set(metadata.get_all("Provides-Extra") or []) >= {
        "worker",
        "operator",
        "cli",
        "otel",
        "dashboard",
        "gateway",
    }
    otel = [r.split(";")[0].replace(" ", "") for r in requires if 'extra == "otel"' in r]
    assert otel == ["opentelemetry-api>=1.25"]


def test_installed_without_extras_has_only_the_light_dependencies(venv: Path) -> None:
    script = (
        f"import importlib.util, sys;print([m for m in {HEAVY!r} if importlib.util.find_spec(m)])"
    )
    assert run(venv / "bin" / "python", "-c", script).strip() == "[]"
    listed = run(venv / "bin" / "python", "-m", "pip", "list", "--format=freeze").lower()
    assert "pydantic==" in listed and "nats-py==" in listed and "cronsim==" in listed
    assert "kopf" not in listed and "kubernetes" not in listed and "aiohttp" not in listed
    # Without the otel extra, tracing is off and the SDK never touches OpenTelemetry.
    assert "opentelemetry" not in listed
    off = "import celeriac.tracing as t; print(t.ENABLED)"
    assert run(venv / "bin" / "python", "-c", off).strip() == "False"


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["-c", "import celeriac.worker_runtime"], "worker"),
        (["-m", "celeriac.worker_runtime", "-A", "x"], "worker"),
        (["-m", "celeriac", "worker", "-A", "x"], "worker"),
        (["-m", "celeriac.operator"], "operator"),
        (["-m", "celeriac", "operator"], "operator"),
        (["-m", "celeriac", "status"], "cli"),
        (["-m", "celeriac", "inspect", "workers"], "cli"),
        (["-m", "celeriac", "dlq", "list"], "cli"),
        (["-m", "celeriac", "dashboard"], "dashboard"),
        (["-m", "celeriac", "gateway"], "gateway"),
    ],
)
def test_worker_and_operator_name_their_extra(venv: Path, argv: list[str], extra: str) -> None:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), *argv], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"needs the '{extra}' extra" in proc.stderr
    assert f"pip install 'celeriac[{extra}]'" in proc.stderr


TASKS = """\
from celeriac import Celeriac

app = Celeriac("packaging", default_queue={queue!r})


@app.task
def add(a: int, b: int) -> int:
    return a + b
"""

CLIENT = """\
import asyncio
import sys

import tasks

print(tasks.add.delay(2, 3).get(timeout=60))


async def main() -> None:
    result = await tasks.add.adelay(20, 22)
    print(await result.aget(timeout=60))
    await tasks.app.aclose()


asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(loaded, "celeriac.worker_runtime" in sys.modules, "celeriac.operator" in sys.modules)
"""


@pytest.fixture
def queue() -> str:
    """A queue of this test's own."""
    return f"pkg-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def worker_app(tmp_path: Path, queue: str) -> WorkerApp:
    """The task module the worker (from the development environment) and the client share."""
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "tasks.py").write_text(TASKS.format(queue=queue))
    (apps / "client.py").write_text(CLIENT.format(heavy=set(HEAVY)))
    return WorkerApp("tasks", apps)


@pytest.mark.integration
def test_submit_and_read_a_result_from_the_bare_sdk(
    venv: Path, nats_url: str, queue: str, worker_app: WorkerApp, start_worker: StartWorker
) -> None:
    apps = worker_app.apps_dir
    worker = start_worker(queue)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), str(apps / "client.py")],
        cwd=apps, env={"CELERIAC_NATS_URL": nats_url, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stderr}\nworker log:\n{worker.log()}"
    assert proc.stdout.splitlines() == ["5", "42", "[] False False"]
