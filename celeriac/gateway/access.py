"""Who may use the gateway: bearer tokens, each allowed a set of queues, and the
inbound webhooks, all read from one document (a file mounted from a Secret, or an
environment variable).

The document, YAML or JSON::

    tokens:
      <token>: ["emails", "reports"]   # or "*" for every queue
    hooks:
      <name>: {task: ..., queue: ..., secret: whsec_..., headers: [...]}

Only SHA-256 digests of the tokens are kept, and a token is found by comparing
digests in constant time, so neither the memory nor the timing gives one away.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from standardwebhooks.webhooks import Webhook

from celeriac.protocol import names

ALL_QUEUES = "*"
#: The one signature scheme inbound hooks are verified with.
STANDARD_WEBHOOKS = "standard-webhooks"


class AccessError(ValueError):
    """The tokens document is unreadable or malformed; the message says where."""


@dataclass(frozen=True)
class Grant:
    """The queues one token may use."""

    queues: frozenset[str]

    def allows(self, queue: str) -> bool:
        """True when this token may submit to (and read) ``queue``."""
        return ALL_QUEUES in self.queues or queue in self.queues


@dataclass(frozen=True)
class Hook:
    """An inbound webhook: requests to ``/v1/hooks/<name>`` become ``task`` on ``queue``."""

    name: str
    task: str
    queue: str
    secret: str
    scheme: str = STANDARD_WEBHOOKS
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Access:
    """The configured tokens (as digests) and hooks."""

    grants: tuple[tuple[bytes, Grant], ...]
    hooks: Mapping[str, Hook]

    def grant(self, token: str) -> Grant | None:
        """The grant of ``token``, or None when it is not a configured token."""
        digest = _digest(token)
        found: Grant | None = None
        for known, grant in self.grants:  # every digest compared: no early exit to time
            if hmac.compare_digest(known, digest):
                found = grant
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _queues(where: str, value: Any) -> frozenset[str]:
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise AccessError(f"{where}: expected a list of queue names or '*', not {value!r}")
    for queue in items:
        if queue != ALL_QUEUES and not (
            isinstance(queue, str) and names.is_valid_queue_name(queue)
        ):
            raise AccessError(f"{where}: {queue!r} is not a queue name")
    queues = frozenset(items)
    if not queues:
        raise AccessError(f"{where}: no queues; list some, or '*' for every queue")
    return queues


def _hook(name: str, value: Any) -> Hook:
    where = f"hooks.{name}"
    if not isinstance(value, Mapping):
        raise AccessError(f"{where}: expected a mapping with task, queue and secret")
    unknown = set(value) - {"task", "queue", "secret", "scheme", "headers"}
    if unknown:
        raise AccessError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    for key in ("task", "queue", "secret"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise AccessError(f"{where}.{key}: expected a non-empty string")
    if not names.is_valid_queue_name(value["queue"]):
        raise AccessError(f"{where}.queue: {value['queue']!r} is not a queue name")
    scheme = value.get("scheme", STANDARD_WEBHOOKS)
    if scheme != STANDARD_WEBHOOKS:
        raise AccessError(
            f"{where}.scheme: only {STANDARD_WEBHOOKS!r} is supported, not {scheme!r}"
        )
    headers = value.get("headers", [])
    if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
        raise AccessError(f"{where}.headers: expected a list of header names")
    try:
        Webhook(value["secret"])
    except Exception:  # the library raises several kinds for a malformed secret
        raise AccessError(
            f"{where}.secret: not a Standard Webhooks secret (whsec_<base64>)"
        ) from None
    return Hook(
        name=name, task=value["task"], queue=value["queue"], secret=value["secret"],
        scheme=scheme, headers=tuple(h.lower() for h in headers),
    )  # fmt: skip


def parse(text: str, where: str) -> Access:
    """The access document ``text`` (YAML, of which JSON is a part) read from ``where``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())  # one line: YAML's messages span several
        raise AccessError(f"{where} is neither YAML nor JSON: {reason}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise AccessError(f"{where}: expected a mapping with 'tokens' (and 'hooks')")
    unknown = set(doc) - {"tokens", "hooks"}
    if unknown:
        raise AccessError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    tokens, hooks = doc.get("tokens") or {}, doc.get("hooks") or {}
    if not isinstance(tokens, Mapping) or not isinstance(hooks, Mapping):
        raise AccessError(f"{where}: 'tokens' and 'hooks' must be mappings")
    grants = []
    for token, queues in tokens.items():
        if not isinstance(token, str) or len(token) < 16:
            raise AccessError(f"{where}: every token must be a string of 16 characters or more")
        grants.append((_digest(token), Grant(_queues(f"{where}: a token's queues", queues))))
    return Access(grants=tuple(grants), hooks={str(n): _hook(str(n), v) for n, v in hooks.items()})


def load(path: str | None, inline: str | None) -> Access:
    """The access document from the file ``path``, else the text ``inline``."""
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return parse(handle.read(), path)
        except OSError as exc:
            raise AccessError(
                f"cannot read the tokens file {path}: {exc.strerror or exc}"
            ) from None
    return parse(inline or "", "the tokens document")
