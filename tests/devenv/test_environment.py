"""The local environment is real: pods schedule and run, CEL rules reject, JetStream works."""

from __future__ import annotations

import json
import ssl
import textwrap
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from celeriac_devenv import versions
from celeriac_devenv.cluster import KubeEnvironment
from celeriac_devenv.nats import NatsServer

from tests.support import wait_until

pytestmark = pytest.mark.e2e


def _pods(env: KubeEnvironment, selector: str, namespace: str = "default") -> list[Any]:
    out = env.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    return [
        p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")
    ]


def _running_ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
    return pod["status"].get("phase") == "Running" and conditions.get("Ready") == "True"


def _deployment(name: str, replicas: int, labels: dict[str, str], command: list[str]) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "main",
                                "image": "registry.invalid/none:1",
                                "command": command,
                                "env": [
                                    {
                                        "name": "POD_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                    }
                                ],
                            }
                        ],
                    },
                },
            },
        }
    )


def test_deployment_pods_become_ready_and_scale_down(kube_env: KubeEnvironment) -> None:
    labels = {"app": "scale-check"}
    kube_env.kubectl("apply", "-f", "-", input=_deployment("scale-check", 3, labels, ["sleep"]))
    wait_until(
        lambda: len([p for p in _pods(kube_env, "app=scale-check") if _running_ready(p)]) == 3,
        timeout=90,
        what="3 pods Running and Ready",
    )
    nodes = {p["spec"]["nodeName"] for p in _pods(kube_env, "app=scale-check")}
    assert nodes == {"kwok-node-0"}
    kube_env.kubectl("scale", "deployment/scale-check", "--replicas=1")
    wait_until(
        lambda: len(_pods(kube_env, "app=scale-check")) == 1, timeout=90, what="scale to 1 pod"
    )
    kube_env.kubectl("delete", "deployment/scale-check", "--wait=false")


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ranges.check.celeriac.io
spec:
  group: check.celeriac.io
  scope: Namespaced
  names: {plural: ranges, singular: range, kind: Range}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              x-kubernetes-validations:
                - rule: self.low <= self.high
                  message: spec.low must not exceed spec.high
              properties:
                low: {type: integer}
                high: {type: integer}
"""


def test_cel_rule_rejects_a_bad_object_with_its_message(kube_env: KubeEnvironment) -> None:
    kube_env.kubectl("apply", "-f", "-", input=CRD)
    kube_env.wait_established("ranges.check.celeriac.io")
    good = (
        "apiVersion: check.celeriac.io/v1\nkind: Range\n"
        "metadata: {name: ok}\nspec: {low: 1, high: 2}\n"
    )
    # Discovery of a new CRD can lag its Established condition by a moment.
    wait_until(
        lambda: kube_env.kubectl("apply", "-f", "-", input=good, check=False).returncode == 0,
        timeout=30,
        what="a valid Range to be accepted",
    )
    bad = good.replace("name: ok", "name: bad").replace("low: 1", "low: 5")
    proc = kube_env.kubectl("apply", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    assert "spec.low must not exceed spec.high" in proc.stderr


def test_kubectl_and_helm_talk_to_the_cluster(kube_env: KubeEnvironment) -> None:
    out = json.loads(kube_env.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == versions.KUBERNETES
    assert out["clientVersion"]["gitVersion"] == versions.KUBERNETES
    helm = kube_env.helm("version", "--short").stdout
    assert helm.startswith(versions.HELM)
    assert kube_env.helm("list", "--all-namespaces", "-o", "json").stdout.strip() == "[]"


POOL_SCRIPT = textwrap.dedent(
    """
    import os, pathlib, signal, sys, time
    out = pathlib.Path(os.environ["MARK_DIR"]) / os.environ["POD_NAME"]
    def bye(*_):
        out.with_suffix(".terminated").write_text("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    out.with_suffix(".started").write_text(str(os.getpid()))
    while True:
        signal.pause()
    """
)


def test_pod_runner_runs_pool_pods_as_processes(kube_env: KubeEnvironment, tmp_path: Path) -> None:
    labels = {"celeriac.io/pool": "runner-check"}
    manifest = json.loads(_deployment("runner-check", 2, labels, ["python", "-c", POOL_SCRIPT]))
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "MARK_DIR", "value": str(tmp_path)})
    kube_env.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_until(
        lambda: len(list(tmp_path.glob("*.started"))) == 2, timeout=90, what="2 local processes"
    )
    names = {p["metadata"]["name"] for p in _pods(kube_env, "celeriac.io/pool=runner-check")}
    assert {p.stem for p in tmp_path.glob("*.started")} == names
    kube_env.kubectl("scale", "deployment/runner-check", "--replicas=0")
    wait_until(
        lambda: len(list(tmp_path.glob("*.terminated"))) == 2,
        timeout=60,
        what="both processes to get SIGTERM",
    )
    kube_env.kubectl("delete", "deployment/runner-check", "--wait=false")


@pytest.mark.integration
async def test_jetstream_publish_pull_ack(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="ENVCHECK", subjects=["envcheck.>"])
        ack = await js.publish("envcheck.one", b"hello")
        assert ack.stream == "ENVCHECK"
        sub = await js.pull_subscribe("envcheck.>", durable="envcheck")
        [msg] = await sub.fetch(1, timeout=5)
        assert msg.data == b"hello"
        await msg.ack_sync()
        info = await js.consumer_info("ENVCHECK", "envcheck")
        assert info.num_ack_pending == 0 and info.num_pending == 0
        await js.delete_stream("ENVCHECK")
    finally:
        await nc.close()


@pytest.mark.integration
async def test_secure_nats_requires_tls_and_the_password(secure_nats: NatsServer) -> None:
    assert secure_nats.security is not None
    assert secure_nats.url.startswith("tls://127.0.0.1:")
    creds = secure_nats.security.client_dir
    assert sorted(p.name for p in creds.iterdir()) == ["ca.crt", "password", "user"]
    assert (creds / "password").stat().st_mode & 0o777 == 0o600
    user, password = (creds / "user").read_text(), (creds / "password").read_text()
    trust = ssl.create_default_context(cafile=str(creds / "ca.crt"))
    # No reconnecting: a refused first connect raises instead of retrying.
    once: dict[str, Any] = {"allow_reconnect": False, "connect_timeout": 5}

    nc = await nats.connect(secure_nats.url, user=user, password=password, tls=trust, **once)
    try:
        info = await nc.jetstream().account_info()
        assert info.streams == 0
    finally:
        await nc.close()

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(secure_nats.url, user=user, password="wrong", tls=trust, **once)
    with pytest.raises(ssl.SSLCertVerificationError):
        await nats.connect(secure_nats.url, user=user, password=password, **once)
