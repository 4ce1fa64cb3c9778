"""Go programs of this repository (examples/go-client): pinned, built and cached like the
other Go tools, keyed by their sources, and rebuilt offline from Go's module cache."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from celeriac_devenv.building import ensure_programs, program_path, sources_digest
from celeriac_devenv.errors import DevenvError
from celeriac_devenv.versions import NATS_GO, PROGRAMS

ROOT = Path(__file__).resolve().parents[2]
NAME = "celeriac-go-client"
SOURCE = ROOT / PROGRAMS[NAME].source

BASE = {"go.mod": b"module m\n", "go.sum": b"x h1:abc\n", "main.go": b"package main\n"}


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (dict(BASE), True),
        (dict(reversed(BASE.items())), True),  # the order files are listed in does not matter
        ({**BASE, "main.go": b"package main\n\n"}, False),  # an edit
        ({**BASE, "go.sum": b"x h1:abd\n"}, False),  # a dependency bump
        ({**BASE, "extra.go": b"package main\n"}, False),  # a new file
        ({k: v for k, v in BASE.items() if k != "go.sum"}, False),  # a file gone
        ({"go.mod": b"module m\n", "go.sum": b"x h1:abc\n", "main.g": b"opackage main\n"}, False),
    ],
)
def test_the_cache_key_follows_the_sources(other: dict[str, bytes], same: bool) -> None:
    assert (sources_digest(other) == sources_digest(BASE)) is same


def test_the_key_is_short_and_stable() -> None:
    key = sources_digest(BASE)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert key == sources_digest(dict(BASE))


def test_go_mod_pins_the_nats_go_client_of_versions_py() -> None:
    go_mod = (SOURCE / "go.mod").read_text()
    assert re.search(rf"^require github\.com/nats-io/nats\.go {re.escape(NATS_GO)}$", go_mod, re.M)
    go_sum = (SOURCE / "go.sum").read_text()
    assert f"github.com/nats-io/nats.go {NATS_GO} h1:" in go_sum


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the program's module folder and an empty binary cache of this test's own."""
    monkeypatch.setenv("CELERIAC_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "go-client"
    shutil.copytree(SOURCE, source)
    return source


def test_an_edit_is_rebuilt_offline_from_the_module_cache(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_programs([NAME], source=copy, quiet=True)[NAME]
    assert first == program_path(NAME, copy) and first.is_file()
    assert ensure_programs([NAME], source=copy, quiet=True)[NAME] == first  # cached
    main_go = copy / "main.go"
    main_go.write_text(main_go.read_text() + "\n// an edit\n")
    # No proxy at all now: the pinned modules must come from Go's module cache.
    monkeypatch.setenv("GOPROXY", "off")
    monkeypatch.setenv("GOFLAGS", "")
    second = ensure_programs([NAME], source=copy, quiet=True)[NAME]
    assert second != first and second.is_file()
    run = subprocess.run([str(second)], capture_output=True, text=True, timeout=30, check=False)
    assert (run.returncode, run.stderr) == (
        2,
        "go-client: -task is required (a registered task name)\n",
    )
    # The build never edits the checkout.
    for name in ("go.mod", "go.sum"):
        assert (copy / name).read_bytes() == (SOURCE / name).read_bytes()


def test_a_go_sum_without_the_pins_fails_with_the_reason(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (copy / "go.sum").write_text("")
    monkeypatch.setenv("GOPROXY", "off")
    with pytest.raises(
        DevenvError, match=r"(?s)building celeriac-go-client failed .*missing go\.sum"
    ):
        ensure_programs([NAME], source=copy, quiet=True)
    assert (copy / "go.sum").read_text() == ""


def test_a_folder_without_go_mod_is_named(tmp_path: Path) -> None:
    with pytest.raises(DevenvError, match=r"no go\.mod in .*nowhere"):
        ensure_programs([NAME], source=tmp_path / "nowhere", quiet=True)
