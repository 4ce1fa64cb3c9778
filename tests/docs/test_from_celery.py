"""docs/from-celery.md is true: its examples run, its project passes, its tables hold.

The page's rules (stated in its last section, "How this page is tested"):

- Every ```python block has a marker on the line before it: ``<!-- run -->`` (run
  here), ``<!-- file: PATH -->`` (a file of the migrated project) or
  ``<!-- celery -->`` (Celery code: compiled only, Celery is not installed).
- The run blocks of one ``##`` section share a namespace and run in order, as the
  module ``proj.tasks``; after each block every ``Celeriac`` app in the namespace is
  put in eager mode (``celeriac.testing.eager``), so no nats-server is needed. A
  ```text block marked ``<!-- output -->`` right after a block is what it prints.
- The file blocks are written to a folder where the project's own tests run under
  pytest, offline (tests/testing/plugins/forbid_network.py).
- Table cells are checked against the code: names in the Celeriac column resolve;
  Celery settings, task options, call options and worker flags are refused exactly
  when their row says "Not supported"; commands and flags exist; yaml resources
  validate; links point at existing pages and headings.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import itertools
import os
import re
import shlex
import subprocess
import sys
import typing
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

import celeriac
from celeriac import config, current, shared, submitting
from celeriac.app import Celeriac
from celeriac.async_result import AsyncResult, GroupResult
from celeriac.cli import main as celeriac_main
from celeriac.cli import split_app
from celeriac.config import Config
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol import resources
from celeriac.task import BoundContext, Request, TaskOptions
from celeriac.testing import MemoryWorker, eager, worker_of
from celeriac.worker_runtime.options import OptionsError, build_parser, parse_options

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "from-celery.md"
PLUGINS = ROOT / "tests" / "testing" / "plugins"
NOT_SUPPORTED = "Not supported"
MARKERS = ("run", "celery", "output")


@dataclass(frozen=True)
class Block:
    """A fenced block: its language, the marker comment before it, where it is."""

    lang: str
    marker: str | None
    code: str
    line: int  # the first line of its code, 1-based
    section: str


@dataclass(frozen=True)
class Row:
    """A table row: the table's first header cell, then the row's Celery and Celeriac cells."""

    table: str
    celery: str
    celeriac: str
    line: int


def _lines() -> list[str]:
    return DOC.read_text().splitlines()


def blocks() -> list[Block]:
    found: list[Block] = []
    body: list[str] = []
    fence: str | None = None
    section, start, marker = "", 0, None
    for number, line in enumerate(_lines(), 1):
        if fence is None and line.startswith("## "):
            section = line[3:].strip()
        elif fence is None and line.startswith("```"):
            fence, start, body = line[3:].strip(), number + 1, []
            marker = _marker_before(number)
        elif fence is not None and line.startswith("```"):
            found.append(Block(fence, marker, "\n".join(body) + "\n", start, section))
            fence = None
        elif fence is not None:
            body.append(line)
    assert fence is None, f"{DOC.name}: a code block is not closed"
    return found


def _marker_before(fence_line: int) -> str | None:
    lines = _lines()
    index = fence_line - 2
    while index >= 0 and not lines[index].strip():
        index -= 1
    matched = re.fullmatch(r"<!-- (.+?) -->", lines[index].strip()) if index >= 0 else None
    return matched.group(1) if matched else None


def rows() -> list[Row]:
    found: list[Row] = []
    header: str | None = None
    for number, line in enumerate(_lines(), 1):
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if header is None:
            header = cells[0]
        elif not set(cells[0]) <= {"-", " "}:
            found.append(Row(header, cells[0], cells[1], number))
    return found


def spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def unsupported(row: Row) -> bool:
    return row.celeriac.startswith(NOT_SUPPORTED)


# Python blocks ------------------------------------------------------------------------


def test_every_python_block_is_marked() -> None:
    for block in blocks():
        if block.lang == "python":
            marker = block.marker or ""
            assert marker in MARKERS or marker.startswith("file: "), (
                f"{DOC.name}:{block.line}: mark the python block run, celery or file: PATH"
            )
            assert marker != "output", f"{DOC.name}:{block.line}: output blocks are text"


def test_celery_blocks_compile() -> None:
    celery = [b for b in blocks() if b.marker == "celery"]
    assert len(celery) >= 5
    for block in celery:
        compile(block.code, f"{DOC}:{block.line}", "exec")


def test_output_blocks_are_text_after_a_run_block() -> None:
    every = blocks()
    for before, block in itertools.pairwise(every):
        if block.marker == "output":
            assert block.lang == "text", f"{DOC.name}:{block.line}: an output block is text"
            assert before.marker == "run", f"{DOC.name}:{block.line}: no run block before it"


def run_sections() -> list[str]:
    return list(dict.fromkeys(b.section for b in blocks() if b.marker == "run"))


@pytest.mark.parametrize("section", run_sections())
def test_run_blocks(section: str) -> None:
    every = blocks()
    outputs = {every[i - 1].line: b.code for i, b in enumerate(every) if i and b.marker == "output"}
    ours = [b for b in every if b.marker == "run" and b.section == section]
    before = current.get_current(), shared.definition_count()
    namespace: dict[str, Any] = {"__name__": "proj.tasks"}
    try:
        with ExitStack() as stack:
            for block in ours:
                printed = io.StringIO()
                code = compile("\n" * (block.line - 1) + block.code, str(DOC), "exec")
                with contextlib.redirect_stdout(printed):
                    exec(code, namespace)
                _go_eager(namespace, stack)
                if block.line in outputs:
                    assert printed.getvalue().strip() == outputs[block.line].strip(), (
                        f"{DOC.name}:{block.line}: the output block after it differs"
                    )
    finally:
        current.set_current(before[0])
    # A shared task would join every app created later in this process.
    assert shared.definition_count() == before[1], "run blocks must not use @shared_task"


def _go_eager(namespace: dict[str, Any], stack: ExitStack) -> None:
    for value in list(namespace.values()):
        if isinstance(value, Celeriac) and worker_of(value) is None:
            stack.enter_context(eager(value))


# The migrated project -----------------------------------------------------------------


def project_files() -> dict[str, str]:
    files = {}
    for block in blocks():
        if block.marker and block.marker.startswith("file: "):
            files[block.marker.removeprefix("file: ")] = block.code
    return files


def write_project(folder: Path) -> dict[str, str]:
    files = project_files()
    for name, code in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(code)
    return files


def offline_env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(project), str(PLUGINS)]),
        "PYTHONDONTWRITEBYTECODE": "1",
        # Were anything to try NATS, this is where it would fail fast.
        "CELERIAC_NATS_URL": "nats://127.0.0.1:9",
        "CELERIAC_CONNECT_TIMEOUT": "1",
    }


def test_the_migrated_project_passes_its_tests(tmp_path: Path) -> None:
    files = write_project(tmp_path)
    assert {"proj/celeriac.py", "proj/tasks.py", "proj/web.py", "tests/test_orders.py"} <= set(
        files
    )
    wanted = sum(c.count("\ndef test_") for n, c in files.items() if n.startswith("tests/"))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
               "forbid_network", "-q", "tests"]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{wanted} passed" in done.stdout, done.stdout


def test_the_worker_finds_every_task_with_dash_a_proj_tasks(tmp_path: Path) -> None:
    write_project(tmp_path)
    probe = (
        "from celeriac.worker_runtime.loading import load_app\n"
        "print(sorted(n for n in load_app('proj.tasks').tasks if n.startswith('proj.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=offline_env(tmp_path),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = ["proj.tasks.charge", "proj.tasks.nightly_report", "proj.tasks.send_receipt"]
    assert done.stdout.strip() == repr(names)


def test_the_old_test_is_kept_unchanged() -> None:
    celery_tests = [b for b in blocks() if b.marker == "celery" and "def test_" in b.code]
    assert celery_tests
    new = project_files()["tests/test_orders.py"]
    old = [
        test
        for block in celery_tests
        for test in re.findall(r"^def test_.*?(?=^\S|\Z)", block.code, re.S | re.M)
    ]
    assert old
    for test in old:
        assert test.strip() in new, test


# Names in the Celeriac column ---------------------------------------------------------


@pytest.fixture(scope="module")
def receivers() -> dict[str, Any]:
    """The objects the tables' spans start with (``app.``, ``add.``, ``result.``...)."""
    app = Celeriac("doc-check", set_as_current=False, nats_url="nats://127.0.0.1:9")

    @app.task(bind=True)
    def add(self: Any, x: int, y: int) -> int:
        return x + y

    result = AsyncResult("task-1", app)
    return {
        "app": app,
        "add": add,
        "task": add,
        "self": BoundContext(add, Request(id="task-1", task=add.name)),
        "result": result,
        "group_result": GroupResult("group-1", [result], app=app),
        "sig": add.s(1, 2),
        "worker": MemoryWorker,
    }


# Properties that are safe to evaluate while resolving a name (no network).
SAFE_PROPERTIES = {(Celeriac, "conf"), (Celeriac, "GroupResult"), (Celeriac, "tasks")}


def resolve(obj: Any, parts: list[str], span: str) -> None:
    """Follow ``parts`` from ``obj`` without running properties that may do I/O."""
    for part in parts:
        if isinstance(obj, BoundContext) and not hasattr(BoundContext, part):
            obj = obj.task if part not in vars(obj) else obj
        try:
            value = inspect.getattr_static(obj, part)
        except AttributeError:
            if isinstance(obj, ModuleType) and hasattr(obj, part):
                obj = getattr(obj, part)  # a name the module loads lazily (celeriac's do)
                continue
            if isinstance(obj, Config):
                config.canonical(part)  # a setting read as an attribute
                return
            raise AssertionError(f"`{span}`: {obj!r} has no attribute {part!r}") from None
        if isinstance(value, property):
            if (type(obj), part) not in SAFE_PROPERTIES:
                return
            value = getattr(obj, part)
        elif isinstance(value, staticmethod | classmethod):
            value = getattr(obj, part)
        obj = value


def resolve_dotted(path: str) -> None:
    """``celeriac.a.b.C.d``: import the longest module prefix, then the attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        resolve(module, parts[cut:], path)
        return
    raise AssertionError(f"`{path}`: no such module")


KEYWORD_SOURCES = (
    Celeriac.__init__, Celeriac.task, Celeriac.periodic_task, Celeriac.add_periodic_task,
    Celeriac.config_from_object, Celeriac.send_task, AsyncResult.get, AsyncResult.revoke,
    BoundContext.retry, eager,
)  # fmt: skip


def known_keywords() -> set[str]:
    names = set(TaskOptions.__optional_keys__) | set(submitting.OPTIONS)
    for source in KEYWORD_SOURCES:
        names |= set(inspect.signature(source).parameters)
    return names


def check_name(span: str, receivers: dict[str, Any], keywords: set[str]) -> None:
    text = re.sub(r"^(raise |await |@)", "", span.strip())
    if re.fullmatch(r"from celeriac[\w.]* import [\w, ]+", text):
        module, names = text[5:].split(" import ")
        for name in names.split(","):
            resolve_dotted(f"{module}.{name.strip()}")
        return
    if text.startswith("spec."):
        crd = (ROOT / "docs" / "crd-reference.md").read_text()
        assert f"`{text}`" in crd, f"`{span}` is not a field in docs/crd-reference.md"
        return
    head = re.match(r"([A-Za-z_]\w*)((?:\.\w+)*)(\(|=)?", text)
    if head is None:
        return
    first, rest, after = head.group(1), head.group(2), head.group(3)
    parts = rest.split(".")[1:]
    if after == "=" and not rest:
        assert first in keywords, f"`{span}`: {first!r} is not an option Celeriac takes"
    elif first == "celeriac" and parts:
        resolve_dotted(f"celeriac{rest}")
    elif first in receivers:
        resolve(receivers[first], parts, span)
    elif first in celeriac.__all__:
        resolve(getattr(celeriac, first), parts, span)
    elif after == "(" and not rest:
        raise AssertionError(f"`{span}`: {first}() is not part of Celeriac")


def test_every_celeriac_name_in_the_tables_exists(receivers: dict[str, Any]) -> None:
    keywords = known_keywords()
    checked = 0
    for row in rows():
        for span in spans(row.celeriac):
            if span.startswith(("celeriac ", "-")):
                continue  # commands and flags: the tests below
            try:
                check_name(span, receivers, keywords)
            except (AssertionError, ImproperlyConfigured, ImportError) as exc:
                raise AssertionError(f"{DOC.name}:{row.line}: {exc}") from exc
            checked += 1
    assert checked > 150


# Celery spellings, supported or not ---------------------------------------------------


def rows_of(table: str) -> list[Row]:
    found = [row for row in rows() if row.table == table]
    assert found, f"{DOC.name} lost its '{table}' table"
    return found


def setting_names(cell: str) -> Iterator[str]:
    for span in spans(cell):
        if re.fullmatch(r"[a-z][a-z0-9_]*", span):
            yield span


def test_celery_settings_are_refused_exactly_when_the_table_says() -> None:
    for row in rows_of("Celery setting"):
        for name in setting_names(row.celery):
            if unsupported(row):
                with pytest.raises(ImproperlyConfigured):
                    config.canonical(name)
            else:
                assert config.canonical(name), f"{DOC.name}:{row.line}: {name}"
        for name in setting_names(row.celeriac):
            if not unsupported(row):
                assert config.canonical(name), f"{DOC.name}:{row.line}: {name}"


def option_names(cell: str) -> list[str]:
    return [span[:-1] for span in spans(cell) if re.fullmatch(r"[a-z_]+=", span)]


def test_celery_task_options_are_refused_exactly_when_the_table_says() -> None:
    app = Celeriac("doc-options", set_as_current=False)
    accepted = set(TaskOptions.__optional_keys__) | {"name", "base"}
    for row in rows_of("Celery task option"):
        names = option_names(row.celery)
        assert names, f"{DOC.name}:{row.line}: no option in the Celery cell"
        for name in names:
            if unsupported(row):
                with pytest.raises(TypeError, match="unknown task option"):
                    app.task(**{name: None})(lambda: None)  # type: ignore[call-overload]
            else:
                assert name in accepted, f"{DOC.name}:{row.line}: {name}"


def test_celery_call_options_are_refused_exactly_when_the_table_says() -> None:
    for row in rows_of("Celery call option"):
        for name in option_names(row.celery):
            if unsupported(row):
                with pytest.raises(TypeError, match=f"unknown option '{name}'"):
                    submitting.check_options({name: "x"}, "apply_async")
            else:
                assert name in submitting.OPTIONS, f"{DOC.name}:{row.line}: {name}"


def worker_parses(span: str) -> bool:
    """Whether ``celeriac worker -A proj.tasks SPAN`` parses (no app is loaded)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            parse_options(["-A", "proj.tasks", *shlex.split(span)])
        except (OptionsError, SystemExit):
            return False
    return True


def test_celery_worker_flags_are_refused_exactly_when_the_table_says() -> None:
    worker_help = build_parser().format_help()
    for row in rows_of("Celery worker option"):
        for span in spans(row.celery):
            if span.startswith("-"):
                assert worker_parses(span) != unsupported(row), f"{DOC.name}:{row.line}: {span}"
        for span in spans(row.celeriac):
            if span.startswith("-") and " " not in span and "=" not in span:
                assert re.search(rf"(^|[\s,]){re.escape(span)}\b", worker_help), span
            elif span.startswith("-"):
                assert worker_parses(span), f"{DOC.name}:{row.line}: {span}"


# Commands, resources, links -----------------------------------------------------------

GROUPS = {"inspect", "dlq", "schedule"}


def help_text(path: list[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: str | int | None = celeriac_main([*path, "--help"])
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None), f"celeriac {' '.join(path)}: {err.getvalue()}"
    return out.getvalue()


def check_command(line: str) -> None:
    words = shlex.split(line, comments=True)
    assert words[0] == "celeriac"
    app, rest = split_app(words[1:])
    if rest[0] == "worker":
        args = rest[1:] if app is None else ["-A", app, *rest[1:]]
        if "-A" not in args and "--app" not in args:
            args = ["-A", "proj.tasks", *args]
        with contextlib.redirect_stderr(io.StringIO()):
            parse_options(args)  # raises OptionsError (or exits) naming a bad flag
        return
    path = rest[:2] if rest[0] in GROUPS and len(rest) > 1 else rest[:1]
    text = help_text(path)
    for word in rest[len(path) :]:
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", text), f"`{line}`: {flag}"


def command_lines() -> list[str]:
    found = [s for row in rows() for s in spans(row.celeriac) if s.startswith("celeriac ")]
    for block in blocks():
        if block.lang == "sh":
            found += [ln.strip() for ln in block.code.splitlines() if ln.startswith("celeriac ")]
    return found


def test_every_celeriac_command_exists() -> None:
    lines = command_lines()
    assert len(lines) > 20
    for line in lines:
        try:
            check_command(line)
        except (OptionsError, SystemExit) as exc:
            raise AssertionError(f"`{line}` is refused: {exc}") from exc


KINDS: dict[str, type[BaseModel]] = {
    "TaskQueue": resources.TaskQueueSpec,
    "WorkerPool": resources.WorkerPoolSpec,
    "TaskSchedule": resources.TaskScheduleSpec,
}


def unknown_fields(model: type[BaseModel], data: dict[str, Any], where: str) -> list[str]:
    """Keys the model does not have (its models ignore them, so a typo would pass)."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    wrong = []
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            wrong.append(f"{where}.{key}")
            continue
        for candidate in (field.annotation, *typing.get_args(field.annotation)):
            nested = isinstance(candidate, type) and issubclass(candidate, BaseModel)
            if nested and isinstance(value, dict):
                wrong += unknown_fields(candidate, value, f"{where}.{key}")
    return wrong


def test_yaml_resources_validate() -> None:
    documents = [d for b in blocks() if b.lang == "yaml" for d in yaml.safe_load_all(b.code)]
    assert {d["kind"] for d in documents} >= {"TaskQueue", "WorkerPool"}
    for document in documents:
        assert document["apiVersion"] == "celeriac.io/v1alpha1"
        spec = document.get("spec") or {}
        KINDS[document["kind"]].model_validate(spec)
        assert unknown_fields(KINDS[document["kind"]], spec, "spec") == []


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_point_at_existing_pages_and_headings() -> None:
    text = DOC.read_text()
    links = re.findall(r"\]\(([\w.-]+\.md)?(?:#([\w-]+))?\)", text)
    assert len(links) > 10
    for page, anchor in links:
        target = DOC.parent / page if page else DOC
        assert target.exists(), page
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"{page}#{anchor}"
