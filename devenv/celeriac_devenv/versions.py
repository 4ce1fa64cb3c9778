"""Pinned versions of every binary the local environment builds.

One place to bump them; the build cache is keyed by these strings, so a bump
rebuilds only what changed.
"""

from __future__ import annotations

from dataclasses import dataclass

KUBERNETES = "v1.35.4"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v3.21.4"
NATS_SERVER = "v2.14.9"
# The official NATS Go client the Go example uses; examples/go-client/go.mod pins
# the same version (a test checks), with its go.sum.
NATS_GO = "v1.56.0"


@dataclass(frozen=True)
class GoBinary:
    """A binary built with `go build` from a module on the Go module proxy."""

    name: str
    module: str
    version: str
    package: str
    # Kubernetes needs its staging modules replaced by their published versions.
    kubernetes_staging: bool = False


def _k8s(name: str) -> GoBinary:
    return GoBinary(
        name=name,
        module="k8s.io/kubernetes",
        version=KUBERNETES,
        package=f"k8s.io/kubernetes/cmd/{name}",
        kubernetes_staging=True,
    )


BINARIES: dict[str, GoBinary] = {
    b.name: b
    for b in (
        _k8s("kube-apiserver"),
        _k8s("kube-controller-manager"),
        _k8s("kube-scheduler"),
        _k8s("kubectl"),
        GoBinary("etcd", "go.etcd.io/etcd/server/v3", ETCD, "go.etcd.io/etcd/server/v3"),
        GoBinary("kwok", "sigs.k8s.io/kwok", KWOK, "sigs.k8s.io/kwok/cmd/kwok"),
        GoBinary("helm", "helm.sh/helm/v3", HELM, "helm.sh/helm/v3/cmd/helm"),
        GoBinary(
            "nats-server",
            "github.com/nats-io/nats-server/v2",
            NATS_SERVER,
            "github.com/nats-io/nats-server/v2",
        ),
    )
}


@dataclass(frozen=True)
class GoProgram:
    """A program of this repository, built with `go build` in its own module folder.

    Its go.mod and go.sum pin every dependency, fetched from the Go module proxy; the
    build is cached under a digest of its sources, so an edit rebuilds it.
    """

    name: str
    # The module folder, relative to the repository root.
    source: str


PROGRAMS: dict[str, GoProgram] = {
    p.name: p for p in (GoProgram("celeriac-go-client", "examples/go-client"),)
}
