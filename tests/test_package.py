"""The package's public surface and its layering."""

from __future__ import annotations

import subprocess
import sys

import celeriac


def test_every_public_name_resolves() -> None:
    for name in celeriac.__all__:
        assert getattr(celeriac, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        _ = celeriac.no_such_name  # type: ignore[attr-defined]
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_protocol_imports_neither_nats_nor_kubernetes() -> None:
    # The wire contract is the bottom layer: stdlib and pydantic only.
    code = (
        "import sys, celeriac.protocol.names, celeriac.protocol.envelope, "
        "celeriac.protocol.jetstream, celeriac.protocol.resources;"
        "bad = [m for m in ('nats', 'kopf', 'kubernetes') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
