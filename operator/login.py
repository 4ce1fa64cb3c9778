"""How kopf authenticates: the operator's --kubeconfig, else in-cluster or $KUBECONFIG.

kopf's built-in login reads the default kubeconfig location, which the client
library fixes at import time; an explicit ``--kubeconfig`` needs this handler.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client
from kubernetes import config as _config

from celeriac.operator.config import OperatorConfig

# The client's config helpers are untyped.
config: Any = _config


def _auth_header(cfg: Any) -> tuple[str | None, str | None]:
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    if not header:
        return None, None
    parts = str(header).split(" ", 1)
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def connection_info(kubeconfig: str) -> kopf.ConnectionInfo:
    """kopf credentials read from a kubeconfig file (certificates, token or basic auth)."""
    cfg: Any = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    scheme, token = _auth_header(cfg)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials for kopf's own API calls."""
    settings: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    if settings.kubeconfig is not None:
        return connection_info(str(settings.kubeconfig))
    info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
    return info
