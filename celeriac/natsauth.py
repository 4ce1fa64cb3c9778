"""Who Celeriac is to NATS, and how it checks NATS is who it claims: credentials and TLS.

Everything comes from one directory laid out as a Kubernetes Secret is mounted, so
the operator, worker pods and any other process read it the same way. It may hold:

- ``nats.creds``: a JWT user credentials file;
- ``user`` and ``password``, or ``token``;
- ``ca.crt``: the CA that signed the server's certificate (TLS is then verified
  against it rather than the system's CAs);
- ``tls.crt`` and ``tls.key``: a client certificate (mutual TLS). A
  ``kubernetes.io/tls`` Secret from cert-manager has exactly these names.

``CELERIAC_NATS_AUTH_DIR`` names the directory; ``CELERIAC_NATS_CREDS`` names a lone
credentials file. A ``tls://`` URL asks for TLS even without ``ca.crt``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nats.errors import AuthorizationError

from celeriac.exceptions import CeleriacError

AUTH_DIR_ENV = "CELERIAC_NATS_AUTH_DIR"
CREDS_ENV = "CELERIAC_NATS_CREDS"

# Errors the server sends when it does not accept who the client says it is.
_REFUSED = ("authorization violation", "authentication", "user authentication revoked")


@dataclass(frozen=True)
class NatsAuth:
    """Credentials and TLS files for NATS connections (all optional)."""

    creds_file: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Where it was read from: read again at each connect, so a rotated Secret is used.
    directory: str | None = None

    @classmethod
    def from_directory(cls, directory: str | Path) -> NatsAuth:
        """What a mounted NATS Secret holds (see the module docstring)."""
        root = Path(directory)
        if not root.is_dir():
            raise CeleriacError(
                f"NATS credentials directory {root} does not exist ({AUTH_DIR_ENV})"
            )

        def path(name: str) -> str | None:
            return str(root / name) if (root / name).is_file() else None

        def text(name: str) -> str | None:
            found = path(name)
            return Path(found).read_text().strip() if found else None

        auth = cls(
            creds_file=path("nats.creds"),
            user=text("user"),
            password=text("password"),
            token=text("token"),
            ca_file=path("ca.crt"),
            cert_file=path("tls.crt"),
            key_file=path("tls.key"),
            directory=str(root),
        )
        auth.check(where=str(root))
        return auth

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str], creds_file: str | None = None
    ) -> NatsAuth:
        """``CELERIAC_NATS_AUTH_DIR`` read as a directory, with ``creds_file`` (else
        ``CELERIAC_NATS_CREDS``) as the credentials file when given."""
        directory = environ.get(AUTH_DIR_ENV)
        auth = cls.from_directory(directory) if directory else cls()
        creds = creds_file or environ.get(CREDS_ENV) or auth.creds_file
        return replace(auth, creds_file=creds)

    def check(self, where: str = "NATS credentials") -> None:
        """Refuse combinations that cannot authenticate, naming what is missing."""
        if self.password is not None and self.user is None:
            raise CeleriacError(f"{where}: a password without a user")
        if (self.cert_file is None) != (self.key_file is None):
            raise CeleriacError(f"{where}: tls.crt and tls.key go together; one is missing")

    def current(self) -> NatsAuth:
        """This, read again from its directory (a Secret's files change when it does)."""
        if self.directory is None:
            return self
        fresh = NatsAuth.from_directory(self.directory)
        return replace(fresh, creds_file=self.creds_file or fresh.creds_file)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for nats-py's ``connect`` (empty when there is nothing),
        from the directory's files as they are now."""
        if self.directory is not None:
            return self.current()._options()
        return self._options()

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.creds_file:
            options["user_credentials"] = self.creds_file
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password
        if self.token is not None:
            options["token"] = self.token
        if self.ca_file or self.cert_file:
            options["tls"] = self.tls_context()
        return options

    def tls_context(self) -> ssl.SSLContext:
        """A verifying TLS context: the given CA (else the system's), the client certificate."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file and self.key_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise CeleriacError(f"cannot load NATS TLS files: {exc}") from exc
        return context

    def summary(self) -> str:
        """What is used, for logs: never a secret."""
        parts = [
            f"credentials file {self.creds_file}" if self.creds_file else "",
            f"user {self.user}" if self.user is not None else "",
            "a token" if self.token is not None else "",
            f"CA {self.ca_file}" if self.ca_file else "",
            f"client certificate {self.cert_file}" if self.cert_file else "",
        ]
        return ", ".join(p for p in parts if p) or "no credentials"


NO_AUTH = NatsAuth()


def refusal(exc: BaseException) -> str | None:
    """Why NATS refused us, when ``exc`` says so (credentials or TLS); None for outages."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or exc  # set when raised by ssl
        return f"the server's TLS certificate is not trusted ({detail})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({getattr(exc, 'reason', None) or exc})"
    text = str(exc).lower()
    if isinstance(exc, AuthorizationError) or any(word in text for word in _REFUSED):
        return "the credentials were refused (Authorization Violation)"
    if "secure connection" in text or "tls required" in text:
        return "the server requires TLS (use a tls:// URL or give ca.crt)"
    return None
