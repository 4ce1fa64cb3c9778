"""Kubeconfig files for the local control plane's users."""

from __future__ import annotations

from pathlib import Path

import yaml

from celeriac_devenv.pki import ClientIdentity, Pki


def render(server: str, certs: Pki, who: ClientIdentity) -> dict[str, object]:
    """A kubeconfig for ``who`` talking to ``server``, with file references to the PKI."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "celeriac-devenv",
                "cluster": {"server": server, "certificate-authority": str(certs.ca_cert)},
            }
        ],
        "users": [
            {
                "name": who.user,
                "user": {
                    "client-certificate": str(certs.client_cert(who)),
                    "client-key": str(certs.client_key(who)),
                },
            }
        ],
        "contexts": [
            {"name": "celeriac-devenv", "context": {"cluster": "celeriac-devenv", "user": who.user}}
        ],
        "current-context": "celeriac-devenv",
    }


def write(path: Path, server: str, certs: Pki, who: ClientIdentity) -> Path:
    """Write the kubeconfig for ``who`` to ``path`` (mode 0600)."""
    path.write_text(yaml.safe_dump(render(server, certs, who), sort_keys=False))
    path.chmod(0o600)
    return path
