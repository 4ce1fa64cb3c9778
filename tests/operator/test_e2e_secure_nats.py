"""The operator and its worker pods on a NATS that requires TLS and a user/password.

This module runs a nats-server of its own that only accepts TLS clients trusting a
throwaway CA and logging in with a user and password, a control plane of its own,
and one operator given ``--nats-auth-dir`` (the client's files, laid out as a
mounted Secret). That operator watches one namespace, where a WorkerPool names a
Secret of those files in ``spec.nats.credentialsSecret``: the TaskQueue becomes
Ready, and a task submitted over TLS is run by the pool's worker pod, which read
the mounted Secret.

A second operator, scoped to a namespace of its own, is given a wrong password:
its TaskQueues get ``Ready=False`` (``NatsRefused``) saying the credentials were
refused, it keeps running and answering its liveness probe, and it logs the
refusal once however often the reconcile fails. A worker pod whose Secret has a
wrong password stays up, unready, and logs the refusal once.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from celeriac_devenv.cluster import KubeEnvironment
from celeriac_devenv.nats import NatsServer, create_nats_security, start_nats

from celeriac.app import Celeriac
from celeriac.natsauth import AUTH_DIR_ENV, NatsAuth
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord
from tests.operator.conftest import OperatorProcess, own_control_plane
from tests.operator.kubeobjects import condition, get, wait

pytestmark = pytest.mark.e2e

APPS = Path(__file__).parent / "apps"
TASK = "opscale.square"  # returns x * x
SECRET = "nats-auth"
MOUNT = "/etc/celeriac/nats"  # where the operator mounts the pool's Secret
# The connections module's logger, as the operator's log format shortens it.
CONNECTIONS_LOGGER = "celeriac.operator.connections"[:20]


# Fixtures: a secure NATS, a control plane and an operator of this module's own ---------------


@dataclass(frozen=True)
class Secure:
    """The module's secure NATS, its control plane, and the namespace the operator watches."""

    nats: NatsServer
    kube: KubeEnvironment
    namespace: str

    @property
    def client_dir(self) -> Path:
        assert self.nats.security is not None
        return self.nats.security.client_dir

    @property
    def password(self) -> str:
        assert self.nats.security is not None
        return self.nats.security.password


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server requiring TLS and a user/password."""
    root = tmp_path_factory.mktemp("secure-nats")
    server = start_nats(root / "nats", security=create_nats_security(root / "security"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secure_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnvironment]:
    """A control plane of this module's own, without a NATS, CRDs installed."""
    with own_control_plane(tmp_path_factory.mktemp("kube-secure-nats")) as env:
        yield env


@pytest.fixture(scope="module")
def secure(secure_server: NatsServer, secure_kube: KubeEnvironment) -> Secure:
    """The namespace the module's operator watches, created before it starts."""
    namespace = f"sn-{uuid.uuid4().hex[:8]}"
    secure_kube.kubectl("create", "namespace", namespace)
    return Secure(secure_server, secure_kube, namespace)


@pytest.fixture(scope="module")
def secure_operator(
    secure: Secure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator with the client's files as its NATS Secret, watching one namespace."""
    proc = OperatorProcess(
        secure.kube,
        tmp_path_factory.mktemp("operator-secure"),
        nats_url=secure.nats.url,
        args=(
            "--nats-auth-dir", str(secure.client_dir),
            "-n", secure.namespace,
            "--lease-name", "secure-op",
        ),
    )  # fmt: skip
    proc.start()
    yield proc
    proc.stop()


# Helpers --------------------------------------------------------------------------------------


def create_secret(kube: KubeEnvironment, namespace: str, name: str, directory: Path) -> None:
    """A Secret of a client directory's files, as a person would create it."""
    kube.kubectl(
        "create", "secret", "generic", name, "-n", namespace,
        f"--from-file=user={directory / 'user'}",
        f"--from-file=password={directory / 'password'}",
        f"--from-file=ca.crt={directory / 'ca.crt'}",
    )  # fmt: skip


def wrong_password_copy(client_dir: Path, target: Path) -> tuple[Path, str]:
    """The client directory, copied, with a wrong password; returns it and the password."""
    wrong = f"wrong-{uuid.uuid4().hex}"
    shutil.copytree(client_dir, target)
    (target / "password").write_text(wrong)
    return target, wrong


def task_queue(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": name},
        "spec": {"deletionPolicy": "Delete"},
    }


def worker_pool(name: str, queue: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "queues": [queue],
            "app": "opscale_tasks:app",
            "image": "celeriac-e2e:local",
            "concurrency": 2,
            "pool": "asyncio",
            "replicas": 1,
            "terminationGracePeriodSeconds": 6,
            "env": [{"name": "PYTHONPATH", "value": str(APPS)}],
            "nats": {"credentialsSecret": secret},
        },
    }


def apply(kube: KubeEnvironment, namespace: str, *objects: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def ready_condition(kube: KubeEnvironment, namespace: str, name: str) -> dict[str, Any] | None:
    return condition(get(kube, namespace, "tq", name), "Ready")


def refused_condition(kube: KubeEnvironment, namespace: str, name: str) -> dict[str, Any] | None:
    cond = ready_condition(kube, namespace, name)
    return cond if cond and cond["reason"] == "NatsRefused" else None


def pool_pod(kube: KubeEnvironment, namespace: str, pool: str) -> str | None:
    """The name of the pool's one running pod (None until there is exactly one)."""
    pods = get(kube, namespace, "pods", "-l", f"celeriac.io/pool={pool}")
    running = [
        p["metadata"]["name"]
        for p in pods["items"]
        if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"
    ]
    return running[0] if len(running) == 1 else None


def pod_log(kube: KubeEnvironment, namespace: str, pod: str) -> str:
    """What the pod runner's local process of ``pod`` logged so far."""
    path = kube.workdir / "logs" / "pods" / f"{namespace}_{pod}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def pod_pid(kube: KubeEnvironment, namespace: str, pod: str) -> int | None:
    """The pid the pod runner started ``pod`` as (from its log)."""
    log = (kube.workdir / "logs" / "pod-runner.log").read_text(errors="replace")
    found = re.findall(
        rf"started pod {re.escape(namespace)}/{re.escape(pod)}/\S* as pid (\d+)", log
    )
    assert len(found) <= 1, f"pod {pod} was started {len(found)} times:\n{log}"
    return int(found[0]) if found else None


def alive(pid: int) -> bool:
    """True while ``pid`` runs and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def http_get(port: int, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def connection_errors(log: str) -> list[str]:
    """The ERROR lines the operator's NATS connections logged about a refusal."""
    return [
        line
        for line in log.splitlines()
        if CONNECTIONS_LOGGER in line and "[ERROR" in line and "refused the operator" in line
    ]


def temporary_failures(log: str) -> list[str]:
    """kopf's lines about a handler that failed and will be retried (its log format
    does not name the object: only this namespace's TaskQueues have handlers to fail)."""
    return [line for line in log.splitlines() if "failed temporarily" in line]


def full_log(proc: OperatorProcess) -> str:
    assert proc.process is not None
    return proc.process.log_path.read_text(errors="replace")


async def stored_result(url: str, auth: NatsAuth, task_id: str) -> ResultRecord:
    nc = await nats.connect(url, **auth.connect_options())
    try:
        kv = await nc.jetstream().key_value(names.RESULTS_BUCKET)
        entry = await kv.get(task_id)
        return ResultRecord.model_validate_json(entry.value or b"{}")
    finally:
        await nc.close()


# Tests ----------------------------------------------------------------------------------------


async def test_queues_and_workers_use_the_secret(
    secure: Secure, secure_operator: OperatorProcess
) -> None:
    kube, ns = secure.kube, secure.namespace
    name = f"sq-{uuid.uuid4().hex[:6]}"
    create_secret(kube, ns, SECRET, secure.client_dir)
    apply(kube, ns, task_queue(name), worker_pool(name, name, SECRET))

    ready = wait(
        lambda: (c := ready_condition(kube, ns, name)) and c["status"] == "True" and c,
        f"TaskQueue {name} Ready over TLS",
    )
    assert ready["reason"] != "NatsRefused", ready

    # The pool's pods mount the Secret and are told where.
    dep = wait(lambda: get(kube, ns, "deployment", f"{name}-workers"), "the pool's Deployment")
    template = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in template["volumes"]}
    secret_volumes = [v for v in volumes.values() if v.get("secret")]
    assert [v["secret"]["secretName"] for v in secret_volumes] == [SECRET], volumes
    [container] = template["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[MOUNT]["name"] == secret_volumes[0]["name"], mounts
    assert mounts[MOUNT].get("readOnly") is True, mounts
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[AUTH_DIR_ENV] == MOUNT, env
    assert env["CELERIAC_NATS_URL"] == secure.nats.url, env

    # A task sent over TLS with the client's files is run by the pool's worker pod.
    pod = wait(lambda: pool_pod(kube, ns, name), "the pool's pod running")
    auth = NatsAuth.from_directory(secure.client_dir)
    app = Celeriac("secure-e2e", secure.nats.url, nats_auth=auth, declare_queues=False)
    try:
        result = await app.asend_task(TASK, args=[7], queue=name)
        assert await result.aget(timeout=45) == 49, pod_log(kube, ns, pod)
        record = await stored_result(secure.nats.url, auth, result.id)
    finally:
        await app.aclose()
    assert record.state.value == "SUCCESS" and record.result == 49, record
    log = pod_log(kube, ns, pod)
    assert re.search(rf"\[task {result.id}\] .*succeeded", log), log  # this pod ran it
    assert "refused" not in log, log
    assert secure.password not in log


async def test_wrong_credentials_are_a_condition_not_a_crash_loop(
    secure: Secure, secure_operator: OperatorProcess, tmp_path: Path
) -> None:
    kube = secure.kube
    wrong_dir, wrong = wrong_password_copy(secure.client_dir, tmp_path / "wrong")

    # A worker pod whose Secret has a wrong password, under the good operator.
    pool = f"bad-{uuid.uuid4().hex[:6]}"
    create_secret(kube, secure.namespace, f"{pool}-nats", wrong_dir)
    apply(kube, secure.namespace, worker_pool(pool, pool, f"{pool}-nats"))

    # A second operator, refused by NATS, in a namespace of its own.
    ns = f"rf-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", ns)
    refused = OperatorProcess(
        kube,
        tmp_path / "operator-refused",
        nats_url=secure.nats.url,
        args=("--nats-auth-dir", str(wrong_dir), "-n", ns, "--lease-name", "refused-op"),
    )
    refused.start()
    try:
        first, second = f"rq-{uuid.uuid4().hex[:6]}", f"rq-{uuid.uuid4().hex[:6]}"
        apply(kube, ns, task_queue(first))
        cond = wait(lambda: refused_condition(kube, ns, first), f"{first} Ready=False NatsRefused")
        assert cond["status"] == "False", cond
        assert "refused the operator" in cond["message"], cond
        assert "credentials were refused" in cond["message"], cond
        assert wrong not in cond["message"] and secure.password not in cond["message"], cond

        # Still running and answering its liveness probe, not exiting to be restarted.
        assert refused.process is not None and refused.process.alive(), refused.log()
        assert refused.role() == "leader"

        # Another reconcile refused the same way: told in its condition, not logged again.
        apply(kube, ns, task_queue(second))
        wait(lambda: refused_condition(kube, ns, second), f"{second} Ready=False NatsRefused")
        wait(
            lambda: len(temporary_failures(full_log(refused))) >= 2,
            "both TaskQueues' handlers to fail temporarily",
            timeout=30,
        )
        log = full_log(refused)
        errors = connection_errors(log)
        assert len(errors) == 1, "\n".join(errors) or log
        assert "credentials were refused" in errors[0], errors
        assert wrong not in log and secure.password not in log
        assert refused.process.alive() and refused.role() == "leader", refused.log()

        # The refused worker pod: started once, still running, unready, refusal told once.
        pod = wait(lambda: pool_pod(kube, secure.namespace, pool), "the refused pool's pod")
        wait(
            lambda: "refused the connection" in pod_log(kube, secure.namespace, pod),
            "the refused worker to log the refusal",
            timeout=30,
        )
        pid = wait(lambda: pod_pid(kube, secure.namespace, pod), "the pod runner's pid of it")
        port_line = re.search(r"health endpoints on :(\d+)", pod_log(kube, secure.namespace, pod))
        assert port_line is not None, pod_log(kube, secure.namespace, pod)
        status, body = http_get(int(port_line[1]), "/readyz")
        assert status == 503 and "refused" in body, (status, body)
        assert http_get(int(port_line[1]), "/healthz")[0] == 200
        assert alive(pid), pod_log(kube, secure.namespace, pod)
        assert pod_pid(kube, secure.namespace, pod) == pid  # not started again
        worker_log = pod_log(kube, secure.namespace, pod)
        assert worker_log.count("refused the connection") == 1, worker_log
        assert wrong not in worker_log, worker_log
    finally:
        refused.stop()
