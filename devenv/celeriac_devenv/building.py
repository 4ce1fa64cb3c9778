"""Builds the environment's binaries from the Go module proxy and caches them.

Nothing is downloaded as a prebuilt binary: each tool is compiled from its
published module with the local Go toolchain, through a small wrapper module.
Binaries are cached by name and version, so a second run builds nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from celeriac_devenv.errors import DevenvError
from celeriac_devenv.versions import BINARIES, PROGRAMS, GoBinary, GoProgram

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/", re.MULTILINE)


def cache_root() -> Path:
    """The cache directory: ``$CELERIAC_CACHE_DIR`` or ``~/.cache/celeriac``."""
    explicit = os.environ.get("CELERIAC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "celeriac"


def binary_path(name: str) -> Path:
    """Where the cached binary for ``name`` at its pinned version lives."""
    spec = BINARIES[name]
    return cache_root() / "bin" / f"{spec.name}-{spec.version}" / spec.name


def ensure_binaries(names: Iterable[str] | None = None, *, quiet: bool = False) -> dict[str, Path]:
    """Return paths of the named binaries, building any that are not cached."""
    wanted = [BINARIES[n] for n in (names if names is not None else BINARIES)]
    missing = [b for b in wanted if not binary_path(b.name).is_file()]
    groups: dict[tuple[str, str], list[GoBinary]] = {}
    for b in missing:
        groups.setdefault((b.module, b.version), []).append(b)
    for group in groups.values():
        _build_group(group, quiet=quiet)
    return {b.name: binary_path(b.name) for b in wanted}


def repo_root() -> Path:
    """The checkout this (editable) devenv was installed from."""
    return Path(__file__).resolve().parents[2]


def program_sources(source: Path) -> dict[str, bytes]:
    """What a program's build depends on: its go.mod, go.sum and Go files, by name."""
    files = [source / "go.mod", source / "go.sum", *sorted(source.glob("*.go"))]
    return {f.name: f.read_bytes() for f in files if f.is_file()}


def sources_digest(files: Mapping[str, bytes]) -> str:
    """A short digest of ``files`` (name to content): the cache key of a program's build."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        # Lengths keep ("a", "bc") and ("ab", "c") apart.
        digest.update(f"{len(name)}:{name}:{len(content)}:".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def program_path(name: str, source: Path | None = None) -> Path:
    """Where the cached build of program ``name`` for its current sources lives."""
    folder = source if source is not None else repo_root() / PROGRAMS[name].source
    key = sources_digest(program_sources(folder))
    return cache_root() / "bin" / f"{name}-{key}" / name


def ensure_programs(
    names: Iterable[str] | None = None, *, source: Path | None = None, quiet: bool = False
) -> dict[str, Path]:
    """Return paths of the named programs of this repository, building any not cached.

    ``source`` overrides the module folder (with a single name), for a checkout
    other than the one the devenv was installed from.
    """
    wanted = [PROGRAMS[n] for n in (names if names is not None else PROGRAMS)]
    paths: dict[str, Path] = {}
    for spec in wanted:
        folder = source if source is not None else repo_root() / spec.source
        if not (folder / "go.mod").is_file():
            raise DevenvError(f"{spec.name}: no go.mod in {folder}; is this a Celeriac checkout?")
        dest = program_path(spec.name, folder)
        if not dest.is_file():
            _build_program(spec, folder, dest, quiet=quiet)
        paths[spec.name] = dest
    return paths


def _build_program(spec: GoProgram, source: Path, dest: Path, *, quiet: bool) -> None:
    _say(quiet, f"building {spec.name} from {source}")
    started = time.monotonic()
    staging = cache_root() / "build"
    staging.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=staging))
    try:
        # -mod=readonly: the committed go.sum must cover every module; the build
        # never edits the checkout. Modules come from the proxy once, then from
        # Go's module cache, so a later rebuild works offline.
        args = ["build", "-mod=readonly", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w"]
        _run_go([*args, "-o", str(out / spec.name), "."], source, f"building {spec.name}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out / spec.name, dest)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    _say(quiet, f"built {spec.name} in {time.monotonic() - started:.0f}s")


def staging_replacements(kubernetes_go_mod: str, kubernetes_version: str) -> dict[str, str]:
    """Map each ``k8s.io/<staging>`` module to its published version.

    ``k8s.io/kubernetes`` points its staging modules at local folders, which a
    dependent module cannot see; each is published as ``v0.<minor>.<patch>``.
    """
    major, minor, patch = kubernetes_version.lstrip("v").split(".")[:3]
    if major != "1":
        raise DevenvError(f"unexpected Kubernetes version {kubernetes_version}")
    published = f"v0.{minor}.{patch}"
    return {m: published for m in _STAGING_REPLACE.findall(kubernetes_go_mod)}


def kubernetes_ldflags(version: str) -> str:
    """Linker flags that make ``/version`` and ``--version`` report ``version``."""
    _, minor, _ = version.lstrip("v").split(".")[:3]
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    values = {
        "gitVersion": version,
        "gitMajor": "1",
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": date,
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    return " ".join(flags)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        names = ", ".join(sorted(BINARIES))
        raise DevenvError(
            f"the Go toolchain (go >= 1.25) is not on PATH; it is needed to build {names} "
            "from the Go module proxy. Install Go and run again."
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-mod=mod"
    return env


def _run_go(args: list[str], cwd: Path, what: str) -> str:
    proc = subprocess.run(
        [_go(), *args], cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        proxy = _go_env().get("GOPROXY", "https://proxy.golang.org")
        raise DevenvError(
            f"{what} failed (go {' '.join(args[:3])}...; GOPROXY={proxy}):\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"[celeriac-devenv] {msg}", file=sys.stderr, flush=True)


def _build_group(group: list[GoBinary], *, quiet: bool) -> None:
    head = group[0]
    names = ", ".join(b.name for b in group)
    _say(quiet, f"building {names} from {head.module}@{head.version} (minutes on a cold cache)")
    work = cache_root() / "build" / f"{head.module.replace('/', '_')}-{head.version}"
    work.mkdir(parents=True, exist_ok=True)
    go_mod = f"module celeriac.local/build\n\ngo 1.25\n\nrequire {head.module} {head.version}\n"
    (work / "go.mod").write_text(go_mod)
    (work / "go.sum").touch()
    ldflags = "-s -w"
    if head.kubernetes_staging:
        info = json.loads(
            _run_go(["mod", "download", "-json", f"{head.module}@{head.version}"], work, "download")
        )
        replaces = staging_replacements(Path(info["GoMod"]).read_text(), head.version)
        go_mod += "\n" + "".join(f"replace {m} => {m} {v}\n" for m, v in sorted(replaces.items()))
        (work / "go.mod").write_text(go_mod)
        ldflags = kubernetes_ldflags(head.version)
    elif head.name == "helm":
        ldflags += f" -X helm.sh/helm/v3/internal/version.version={head.version}"
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    args = ["build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(out) + "/"]
    args += [b.package for b in group]
    started = time.monotonic()
    _stream_build(args, work, names, quiet=quiet)
    for b in group:
        built = out / Path(b.package).name
        if b.package == b.module or not built.exists():
            built = next(p for p in out.iterdir() if p.is_file())
        dest = binary_path(b.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, dest)
    shutil.rmtree(out, ignore_errors=True)
    _say(quiet, f"built {names} in {time.monotonic() - started:.0f}s")


def _stream_build(args: list[str], cwd: Path, names: str, *, quiet: bool) -> None:
    """Run ``go build -v``, printing a progress line every 15 s instead of every package."""
    proc = subprocess.Popen(
        [_go(), *args], cwd=cwd, env=_go_env(), stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    tail: list[str] = []
    count = 0
    started = time.monotonic()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(15):
            _say(quiet, f"  {names}: {count} packages ({time.monotonic() - started:.0f}s)")

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        for line in proc.stderr:
            count += 1
            tail = [*tail, line][-60:]
        rc = proc.wait()
    finally:
        stop.set()
    if rc != 0:
        raise DevenvError(
            f"building {names} failed (is the Go module proxy reachable? GOPROXY="
            f"{_go_env().get('GOPROXY', 'https://proxy.golang.org')}):\n{''.join(tail)}"
        )
