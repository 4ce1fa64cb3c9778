"""Pure parts of the local environment: build inputs, pod runner translation, layout."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from celeriac_devenv.building import ensure_binaries, kubernetes_ldflags, staging_replacements
from celeriac_devenv.errors import DevenvError
from celeriac_devenv.nats import (
    ClusterRoutes,
    NatsSecurity,
    NatsServer,
    config_string,
    render_security_config,
)
from celeriac_devenv.podrunner import (
    container_argv,
    pod_environment,
    with_local_health_port,
    with_local_mounts,
    write_volumes,
)

GO_MOD = """module k8s.io/kubernetes

require (
\tk8s.io/api v0.0.0
\tgithub.com/spf13/cobra v1.9.1
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kube-openapi => k8s.io/kube-openapi v0.0.0-2025
)
"""


def test_staging_modules_map_to_published_versions() -> None:
    got = staging_replacements(GO_MOD, "v1.35.4")
    assert got == {"k8s.io/api": "v0.35.4", "k8s.io/client-go": "v0.35.4"}


def test_staging_rejects_a_non_v1_version() -> None:
    with pytest.raises(RuntimeError, match="unexpected Kubernetes version"):
        staging_replacements(GO_MOD, "v2.0.0")


def test_version_ldflags_set_both_version_packages() -> None:
    flags = kubernetes_ldflags("v1.35.4")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.35.4" in flags
        assert f"-X {pkg}.gitMinor=35" in flags


@pytest.mark.parametrize(
    ("container", "expected_head"),
    [
        ({"command": ["celeriac", "worker"], "args": ["-Q", "a"]}, "/venv/bin/celeriac"),
        ({"command": ["python", "-m", "x"]}, f"/venv/bin/{Path(sys.executable).name}"),
        ({"command": ["/bin/echo"], "args": ["hi"]}, "/bin/echo"),
        ({"args": ["celeriac", "worker"]}, "/venv/bin/celeriac"),
    ],
)
def test_container_argv(container: dict[str, list[str]], expected_head: str) -> None:
    argv = container_argv(container, Path("/venv/bin"))
    assert argv[0] == expected_head
    assert argv[1:] == [*container.get("command", []), *container.get("args", [])][1:]


def test_container_without_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="no command"):
        container_argv({"name": "c"}, Path("/venv/bin"))


def test_pod_environment_resolves_values_fields_and_references() -> None:
    pod = {
        "metadata": {"name": "p-1", "namespace": "ns", "uid": "u"},
        "spec": {"nodeName": "kwok-node-0"},
        "status": {"podIP": "10.0.0.7"},
    }
    container = {
        "envFrom": [
            {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
            {"secretRef": {"name": "s"}},
        ],
        "env": [
            {"name": "PLAIN", "value": "1"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
        ],
    }
    data = {("configmap", "ns", "cm"): {"mode": "fast"}, ("secret", "ns", "s"): {"token": "t0k"}}
    env = pod_environment(pod, container, lambda kind, ns, name: data[(kind, ns, name)])
    assert env == {
        "CM_mode": "fast",
        "token": "t0k",
        "PLAIN": "1",
        "POD": "p-1",
        "IP": "10.0.0.7",
        "TOKEN": "t0k",
        "MODE": "fast",
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["w", "--health-port", "8080"], ["w", "--health-port", "1234"]),
        (["w", "--health-port=8080", "-Q", "a"], ["w", "--health-port=1234", "-Q", "a"]),
        (["w", "-Q", "a"], ["w", "-Q", "a"]),
    ],
)
def test_local_health_port(argv: list[str], expected: list[str]) -> None:
    env: dict[str, str] = {}
    assert with_local_health_port(argv, env, 1234) == expected
    assert env["CELERIAC_HEALTH_PORT"] == "1234"


VOLUME_DATA = {
    ("secret", "ns", "creds"): {"user": "u", "password": "p4ss", "ca.crt": "PEM"},
    ("configmap", "ns", "settings"): {"mode": "fast", "level": "debug"},
}


def _volume_lookup(kind: str, ns: str, name: str) -> Mapping[str, str]:
    try:
        return VOLUME_DATA[(kind, ns, name)]
    except KeyError:
        raise LookupError(f"{kind} {ns}/{name} not found") from None


def _pod_with(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"volumes": volumes}}


def _files(folder: Path) -> dict[str, str]:
    return {
        str(f.relative_to(folder)): f.read_text() for f in sorted(folder.rglob("*")) if f.is_file()
    }


@pytest.mark.parametrize(
    ("volumes", "mounts", "expected"),
    [
        pytest.param(
            [{"name": "nats-creds", "secret": {"secretName": "creds"}}],
            [{"name": "nats-creds", "mountPath": "/etc/celeriac/nats"}],
            {"/etc/celeriac/nats": {"user": "u", "password": "p4ss", "ca.crt": "PEM"}},
            id="every key of a secret",
        ),
        pytest.param(
            [
                {
                    "name": "cfg",
                    "configMap": {"name": "settings", "items": [{"key": "mode", "path": "a/m"}]},
                }
            ],
            [{"name": "cfg", "mountPath": "/etc/cfg/"}],
            {"/etc/cfg": {"a/m": "fast"}},
            id="configmap items at their paths",
        ),
        pytest.param(
            [
                {"name": "nats-creds", "secret": {"secretName": "creds"}},
                {"name": "scratch", "emptyDir": {}},
            ],
            [
                {"name": "nats-creds", "mountPath": "/creds", "subPath": "user"},
                {"name": "scratch", "mountPath": "/tmp/scratch"},
            ],
            {},
            id="subPath and other volume kinds are skipped",
        ),
        pytest.param(
            [{"name": "nats-creds", "secret": {"secretName": "creds", "items": []}}],
            [
                {"name": "nats-creds", "mountPath": "/one"},
                {"name": "nats-creds", "mountPath": "/two", "readOnly": True},
            ],
            {
                "/one": {"user": "u", "password": "p4ss", "ca.crt": "PEM"},
                "/two": {"user": "u", "password": "p4ss", "ca.crt": "PEM"},
            },
            id="one volume at two mount paths",
        ),
        pytest.param(
            [{"name": "maybe", "secret": {"secretName": "absent", "optional": True}}],
            [{"name": "maybe", "mountPath": "/maybe"}],
            {"/maybe": {}},
            id="an optional missing secret is an empty folder",
        ),
    ],
)
def test_write_volumes(
    tmp_path: Path,
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    expected: dict[str, dict[str, str]],
) -> None:
    root = tmp_path / "volumes"
    got = write_volumes(_pod_with(volumes), {"volumeMounts": mounts}, _volume_lookup, root)
    assert {path: _files(folder) for path, folder in got.items()} == expected
    for folder in got.values():
        assert folder.parent == root
        for f in folder.rglob("*"):
            assert (f.stat().st_mode & 0o777) == (0o700 if f.is_dir() else 0o600)


@pytest.mark.parametrize(
    ("volume", "match"),
    [
        pytest.param({"secret": {"secretName": "absent"}}, "secret ns/absent", id="no secret"),
        pytest.param(
            {"configMap": {"name": "settings", "items": [{"key": "nope", "path": "x"}]}},
            "no key 'nope'",
            id="no such key",
        ),
        pytest.param(
            {"secret": {"secretName": "creds", "items": [{"key": "user", "path": "../x"}]}},
            "leaves the volume",
            id="path escapes",
        ),
    ],
)
def test_write_volumes_refuses(tmp_path: Path, volume: dict[str, Any], match: str) -> None:
    pod = _pod_with([{"name": "v", **volume}])
    container = {"volumeMounts": [{"name": "v", "mountPath": "/v"}]}
    with pytest.raises(ValueError, match=match):
        write_volumes(pod, container, _volume_lookup, tmp_path)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/etc/celeriac/nats", "/local/nats"),
        ("/etc/celeriac/nats/ca.crt", "/local/nats/ca.crt"),
        ("/etc/celeriac/nats/inner/x", "/local/inner/x"),
        ("/etc/celeriac/natsy", "/etc/celeriac/natsy"),
        ("/etc/celeriac", "/etc/celeriac"),
        ("nats://h:4222", "nats://h:4222"),
        ("", ""),
    ],
)
def test_with_local_mounts(value: str, expected: str) -> None:
    mounts = {
        "/etc/celeriac/nats": Path("/local/nats"),
        "/etc/celeriac/nats/inner": Path("/local/inner"),
    }
    assert with_local_mounts({"V": value, "KEEP": "x"}, mounts) == {"V": expected, "KEEP": "x"}


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("celeriac", '"celeriac"'),
        ("a b/c", '"a b/c"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak\ttab", '"line\\x0abreak\\x09tab"'),
        ("$VAR#{x}", '"$VAR#{x}"'),
        ("café", '"café"'),
    ],
)
def test_config_string_quotes_for_nats_server(value: str, rendered: str) -> None:
    assert config_string(value) == rendered


def test_security_config_requires_tls_and_a_password() -> None:
    security = NatsSecurity(Path('/d/"q"'), user="celeriac", password="pw-1")
    lines = [line.strip() for line in render_security_config(security).splitlines()]
    tls = lines[lines.index("tls {") : lines.index("}") + 1]
    assert tls == [
        "tls {",
        'cert_file: "/d/\\"q\\"/server.crt"',
        'key_file: "/d/\\"q\\"/server.key"',
        "timeout: 2",
        "}",
    ]
    auth = lines[lines.index("authorization {") :]
    assert auth == ["authorization {", 'user: "celeriac"', 'password: "pw-1"', "}"]


@pytest.mark.parametrize(
    ("security", "url"),
    [
        (None, "nats://127.0.0.1:4222"),
        (NatsSecurity(Path("/d"), "u", "p"), "tls://127.0.0.1:4222"),
    ],
)
def test_nats_url_scheme(security: NatsSecurity | None, url: str) -> None:
    assert NatsServer(Path("/d"), port=4222, security=security).url == url


def test_secure_nats_cannot_be_a_cluster_node(tmp_path: Path) -> None:
    server = NatsServer(
        tmp_path,
        security=NatsSecurity(tmp_path, "u", "p"),
        cluster=ClusterRoutes("c", 1, (1, 2)),
    )
    with pytest.raises(DevenvError, match="cannot be a cluster node"):
        server.launch()
    assert server.process is None


def test_import_operator_from_repo_root_is_the_standard_library(repo_root: Path) -> None:
    # `python -c` puts the current directory first on sys.path: the repository's
    # operator/ folder must still not shadow the standard library module.
    code = (
        "import operator, sysconfig, pathlib, celeriac.operator;"
        "print(pathlib.Path(operator.__file__).parent);"
        "print(sysconfig.get_paths()['stdlib']);"
        "print(operator.itemgetter(1)('ab'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    module_dir, stdlib, item = proc.stdout.split()
    assert Path(module_dir).resolve() == Path(stdlib).resolve()
    assert item == "b"
    assert not (repo_root / "operator" / "__init__.py").exists()


def test_cli_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "celeriac", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().startswith("celeriac ")


def test_missing_go_is_named_in_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DevenvError, match=r"Go toolchain .* not on PATH"):
        ensure_binaries(["nats-server"], quiet=True)


def test_an_unreachable_module_proxy_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty module cache and no proxy: the build cannot fetch its sources.
    monkeypatch.setenv("CELERIAC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "gomod"))
    monkeypatch.setenv("GOPROXY", "off")
    monkeypatch.setenv("GOFLAGS", "")
    with pytest.raises(DevenvError, match=r"building nats-server failed .*GOPROXY=off"):
        ensure_binaries(["nats-server"], quiet=True)
