"""The secrets webhooks are signed with, read from a JSON file (a mounted Secret).

The file maps a secret's name (what a task's ``webhook`` option names) to one
``whsec_...`` secret or a list of them. With several, each delivery carries one
signature per secret: a receiver holding the old or the new one accepts it while
the secret is being rotated.

    {"default": "whsec_...", "billing": ["whsec_new...", "whsec_old..."]}
"""

from __future__ import annotations

import json
from pathlib import Path

from celeriac.protocol.webhooks import SecretError, secret_key

SECRETS_FILE_ENV = "CELERIAC_WEBHOOK_SECRETS_FILE"

Secrets = dict[str, tuple[bytes, ...]]


class SecretsFileError(ValueError):
    """The secrets file is missing or wrong; the message names the file and the entry."""


def parse_secrets(text: str, where: str) -> Secrets:
    """The keys of every named secret in ``text`` (JSON); raises SecretsFileError."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SecretsFileError(f"{where}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(document, dict) or not document:
        raise SecretsFileError(f"{where}: must be a JSON object of secret name -> secret(s)")
    secrets: Secrets = {}
    for name, value in document.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str)
                                                                 for v in values):  # fmt: skip
            raise SecretsFileError(f"{where}: {name!r} must be a secret or a list of secrets")
        try:
            secrets[name] = tuple(secret_key(v) for v in values)
        except SecretError as exc:
            raise SecretsFileError(f"{where}: {name!r}: {exc}") from None
    return secrets


def read_secrets(path: str) -> Secrets:
    """:func:`parse_secrets` of the file at ``path``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SecretsFileError(f"cannot read the webhook secrets file {path}: "
                               f"{exc.strerror or exc}") from None  # fmt: skip
    return parse_secrets(text, path)
