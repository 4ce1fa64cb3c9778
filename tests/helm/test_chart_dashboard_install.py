"""The chart's dashboard on the real control plane: its pod Ready behind its Service, its
permissions, and its container run locally as the pod runner runs worker pods.

kwok marks the dashboard's pod Running and Ready without running it (the pod runner
only runs worker pods, labelled ``celeriac.io/pool``), so the test also runs the
container's command with the environment the pod spec gives it, as its ServiceAccount,
and reads the WorkerPools through it.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from celeriac_devenv.chart import REPO_ROOT, Release, install, service_account_kubeconfig, uninstall
from celeriac_devenv.cluster import KubeEnvironment
from celeriac_devenv.podrunner import container_argv, pod_environment
from celeriac_devenv.processes import free_port, spawn

from tests.support import wait_until

pytestmark = pytest.mark.e2e


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
            return response.status, json.loads(body) if body[:1] in (b"{", b"[") else body
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _dashboard_pod(env: KubeEnvironment, release: Release) -> dict[str, Any]:
    out = env.kubectl(
        "get", "pods", "-n", release.namespace, "-o", "json",
        "-l", f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=dashboard",
    )  # fmt: skip
    [pod] = json.loads(out.stdout)["items"]
    result: dict[str, Any] = pod
    return result


def _local_argv(argv: list[str], port: int) -> list[str]:
    """The container's command, listening on loopback and a free port (pods share a host)."""
    out = list(argv)
    out[out.index("--host") + 1] = "127.0.0.1"
    out[out.index("--port") + 1] = str(port)
    return out


def test_dashboard_installs_ready_and_reads_pools_as_its_account(
    kube_env: KubeEnvironment, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    release = Release(name=f"dash-{suffix}", namespace=f"dash-{suffix}")
    team = f"dash-{suffix}-team"
    dash = f"{release.fullname}-dashboard"
    account = f"system:serviceaccount:{release.namespace}:{dash}"
    token = secrets.token_urlsafe(16)
    values = {
        "nats": {"url": str(kube_env.nats_url)},
        "dashboard": {"enabled": True, "readOnly": True, "auth": {"token": token}},
    }
    process = None
    try:
        notes = install(kube_env, release, values).split("NOTES:", 1)[1]
        forward = f"kubectl -n {release.namespace} port-forward service/{dash} 8787:8787"
        assert forward in notes and "http://127.0.0.1:8787/?token=<token>" in notes
        assert token not in notes and "read-only" in notes
        kube_env.kubectl(
            "rollout", "status", f"deployment/{dash}", "-n", release.namespace, "--timeout=60s"
        )

        # The Service selects the Ready pod.
        def ready_endpoints() -> list[str]:
            out = kube_env.kubectl(
                "get", "endpointslices", "-n", release.namespace, "-o", "json",
                "-l", f"kubernetes.io/service-name={dash}",
            ).stdout  # fmt: skip
            return [
                e["targetRef"]["name"]
                for s in json.loads(out)["items"]
                for e in s.get("endpoints") or []
                if e.get("conditions", {}).get("ready")
            ]

        ready = wait_until(
            ready_endpoints, timeout=60, what="a ready endpoint behind the dashboard's Service"
        )
        assert ready == [_dashboard_pod(kube_env, release)["metadata"]["name"]]

        # Its account reads WorkerPools everywhere and nothing else.
        def can(*question: str) -> str:
            return kube_env.kubectl(
                "auth", "can-i", *question, "--as", account, check=False
            ).stdout.strip()

        assert can("list", "workerpools.celeriac.io", "--all-namespaces") == "yes"
        assert can("watch", "workerpools.celeriac.io", "-n", team) == "yes"
        assert can("patch", "workerpools.celeriac.io", "-n", team) == "no"
        assert can("get", "secrets", "-n", release.namespace) == "no"
        assert can("list", "deployments", "-n", team) == "no"

        # A WorkerPool to see (no operator runs here; the object alone is shown).
        kube_env.kubectl("create", "namespace", team)
        pool = yaml.safe_load((REPO_ROOT / "examples" / "workerpool.yaml").read_text())
        pool["metadata"]["namespace"] = team
        kube_env.kubectl("apply", "-f", "-", input=json.dumps(pool))

        # Run the pod's container as the pod runner would, as the dashboard's account.
        pod = _dashboard_pod(kube_env, release)
        container = pod["spec"]["containers"][0]

        def lookup(kind: str, ns: str, name: str) -> Mapping[str, str]:
            assert kind == "secret"
            out = kube_env.kubectl("get", "secret", name, "-n", ns, "-o", "json").stdout
            data = json.loads(out).get("data") or {}
            return {k: base64.b64decode(v).decode() for k, v in data.items()}

        child_env = pod_environment(pod, container, lookup)
        assert child_env["CELERIAC_DASHBOARD_TOKEN"] == token
        child_env["KUBECONFIG"] = str(
            service_account_kubeconfig(kube_env, release, tmp_path / "dash.kubeconfig", dash)
        )
        port = free_port()
        argv = _local_argv(container_argv(container, Path(sys.executable).parent), port)
        process = spawn("dashboard", argv, log_dir=tmp_path, env=child_env)
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: _get(f"{base}/healthz")[0] == 200,
            timeout=60,
            what="the dashboard's /healthz",
            interval=0.1,
            alive=process,
        )
        assert _get(f"{base}/api/pools")[0] == 401  # the token is required
        status, pools = _get(f"{base}/api/pools", token)
        assert status == 200, pools
        assert pools["connected"] is True, pools
        assert [(p["namespace"], p["name"]) for p in pools["pools"]] == [
            (team, pool["metadata"]["name"])
        ]
        status, config = _get(f"{base}/api/config", token)
        assert status == 200 and config["read_only"] is True, config
    finally:
        if process is not None:
            process.stop(grace=10)
        uninstall(kube_env, release)
        kube_env.kubectl("delete", "namespace", team, "--wait=false", "--ignore-not-found")
        kube_env.kubectl("delete", "namespace", release.namespace, "--wait=false")
