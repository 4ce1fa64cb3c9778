"""Signed task messages: HMAC-SHA256 over what a forger must not change.

A producer holding a key adds ``Celeriac-Signature: v1=<key id>:<base64 HMAC>`` to each
task message it publishes; a worker configured with keys refuses (dead-letters) a
message without a valid one. The HMAC's input is four lines joined by ``\\n``, UTF-8::

    celeriac-signature-v1
    <queue>            the queue of the task subject (celeriac.tasks.<queue>)
    <message id>       Nats-Msg-Id; periodic.<name> for a periodic schedule and its fires
    <sha256 of body>   lower-case hex of the exact body bytes

so the body, the id and the queue are covered, and any language can build it. A
header may carry several space-separated signatures (one per key, while keys
rotate): one that verifies with a key the worker holds is enough. Signing proves
who sent a message and that it is unchanged, not that it is new: a copy of a signed
message published again verifies (JetStream drops it inside the duplicate window).

Keys are ``(key id, secret)`` pairs written ``<id>:<base64 secret>``, comma- or
line-separated, in ``CELERIAC_SIGNING_KEYS`` or in the file named by
``CELERIAC_SIGNING_KEYS_FILE``; the first key signs, all of them verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from celeriac.protocol import names

HDR_SIGNATURE = "Celeriac-Signature"
ENV_KEYS = "CELERIAC_SIGNING_KEYS"
ENV_KEYS_FILE = "CELERIAC_SIGNING_KEYS_FILE"
VERSION = "v1"
MIN_SECRET_BYTES = 32
# A header with more signatures than this is refused unread: each costs an HMAC.
MAX_SIGNATURES = 8
MAX_HEADER_CHARS = 1024
KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_KEY_ID = re.compile(KEY_ID_PATTERN)
_PREFIX = b"celeriac-signature-v1\n"
# Periodic schedules and their fires carry no task id: they are signed under this
# prefix and the schedule's name. Task ids cannot start with it, so a signed fire
# can never pass for a task.
PERIODIC_ID_PREFIX = "periodic."


class SigningKeyError(ValueError):
    """A signing key is malformed; the message names where it came from."""


@dataclass(frozen=True)
class SigningKey:
    """One key: its id (sent in the header) and its secret (never sent)."""

    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class SigningKeys:
    """The keys of a producer or worker: the first signs, every one verifies."""

    keys: tuple[SigningKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("signing keys: at least one key is needed")
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("signing keys: a key id appears twice")
        for key in self.keys:
            check_key(key.key_id, key.secret, "signing keys")

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids, signing key first."""
        return tuple(k.key_id for k in self.keys)

    def sign(self, queue: str, message_id: str, body: bytes, *, every_key: bool = False) -> str:
        """The ``Celeriac-Signature`` value for a message (the first key; ``every_key``:
        one signature per key, so workers holding any one of them accept it)."""
        data = signing_input(queue, message_id, body)
        chosen = self.keys if every_key else self.keys[:1]
        return " ".join(f"{VERSION}={k.key_id}:{_mac(k.secret, data)}" for k in chosen)

    def verify(
        self, queue: str, message_id: str, body: bytes, header: str | None
    ) -> Refusal | None:
        """None when ``header`` holds a signature that verifies, else why not."""
        if header is None or not header.strip():
            return Refusal(Problem.UNSIGNED, f"no {HDR_SIGNATURE} header")
        entries = parse_header(header)
        if isinstance(entries, Refusal):
            return entries
        by_id = {k.key_id: k for k in self.keys}
        known = [(by_id[kid], mac) for kid, mac in entries if kid in by_id]
        if not known:
            unknown = ", ".join(sorted({kid for kid, _ in entries}))
            return Refusal(
                Problem.BAD_SIGNATURE,
                f"unknown signing key id {unknown} (this worker holds {', '.join(self.key_ids)})",
            )
        data = signing_input(queue, message_id, body)
        for key, mac in known:
            expected = hmac.digest(key.secret, data, "sha256")
            if hmac.compare_digest(expected, base64.b64decode(mac)):  # constant time
                return None
        return Refusal(
            Problem.BAD_SIGNATURE,
            f"signature mismatch for key {known[0][0].key_id}: the body, message id or "
            "queue differs from what was signed, or the secret is not the signer's",
        )


class Problem(StrEnum):
    """The two ways a message fails verification (dead-letter reasons of the same name)."""

    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"


@dataclass(frozen=True)
class Refusal:
    """Why a message does not verify: which problem, in one sentence."""

    problem: Problem
    error: str


def signing_input(queue: str, message_id: str, body: bytes) -> bytes:
    """The bytes the HMAC is computed over (see the module docstring)."""
    digest = hashlib.sha256(body).hexdigest()
    return _PREFIX + f"{queue}\n{message_id}\n{digest}".encode()


def _mac(secret: bytes, data: bytes) -> str:
    return base64.b64encode(hmac.digest(secret, data, "sha256")).decode()


def parse_header(header: str) -> list[tuple[str, str]] | Refusal:
    """The ``(key id, base64 mac)`` pairs of a ``Celeriac-Signature`` value.

    Signatures of other versions (``v2=...``) are skipped, so a later version can be
    added next to v1; a header with no readable v1 signature is refused.
    """
    if len(header) > MAX_HEADER_CHARS:
        return Refusal(
            Problem.BAD_SIGNATURE,
            f"malformed {HDR_SIGNATURE} header: longer than {MAX_HEADER_CHARS} characters",
        )
    parts = header.split()
    if len(parts) > MAX_SIGNATURES:
        return Refusal(
            Problem.BAD_SIGNATURE,
            f"malformed {HDR_SIGNATURE} header: more than {MAX_SIGNATURES} signatures",
        )
    entries: list[tuple[str, str]] = []
    for part in parts:
        version, eq, rest = part.partition("=")
        if eq and version != VERSION and re.fullmatch(r"v[0-9]+", version):
            continue
        kid, colon, mac = rest.partition(":")
        if version != VERSION or not colon or not _KEY_ID.match(kid) or not _is_mac(mac):
            shown = part if len(part) <= 40 else f"{part[:40]}..."
            return Refusal(
                Problem.BAD_SIGNATURE,
                f"malformed {HDR_SIGNATURE} header: {shown!r} is not "
                f"{VERSION}=<key id>:<base64 HMAC-SHA256>",
            )
        entries.append((kid, mac))
    if not entries:
        return Refusal(Problem.BAD_SIGNATURE, f"no {VERSION} signature in {HDR_SIGNATURE}")
    return entries


def _is_mac(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == hashlib.sha256().digest_size
    except (binascii.Error, ValueError):
        return False


# Where a message's signed id comes from ---------------------------------------------------


def periodic_id(name: str) -> str:
    """The id a periodic schedule ``name`` and its fires are signed under."""
    return f"{PERIODIC_ID_PREFIX}{name}"


def delivered_id(headers: Mapping[str, str], queue: str, periodic_header: str) -> str:
    """The message id a worker checks a delivery's signature against.

    A fire's is ``periodic.<name>`` from its ``Celeriac-Periodic`` header; a task's is
    its ``Nats-Msg-Id``, or, for a delayed task (the server drops ``Nats-Msg-Id`` when
    it moves one to the task subject), the last token of ``Nats-Scheduler``.
    """
    name = headers.get(periodic_header)
    if name is not None:
        return periodic_id(name)
    msg_id = headers.get(names.HDR_MSG_ID)
    if msg_id is not None:
        return msg_id
    scheduler = headers.get("Nats-Scheduler", "")
    prefix = f"celeriac.schedules.{queue}."
    return scheduler[len(prefix) :] if scheduler.startswith(prefix) else ""


# Keys from text, the environment and files ----------------------------------------------


def check_key(key_id: str, secret: bytes, where: str) -> None:
    """Raise ValueError naming ``where`` when the key id or secret is unusable."""
    if not _KEY_ID.match(key_id):
        raise SigningKeyError(
            f"{where}: key id {key_id[:40]!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise SigningKeyError(
            f"{where}: the secret of key {key_id} is {len(secret)} bytes; use at least "
            f"{MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 32`)"
        )


def parse_keys(text: str, where: str) -> SigningKeys:
    """Keys written ``<id>:<base64 secret>``, separated by commas or line breaks.

    Raises ValueError with a sentence naming ``where`` (an environment variable or
    file) and the key at fault; the secret itself is never repeated.
    """
    keys: list[SigningKey] = []
    items = [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]
    for number, item in enumerate(items, start=1):
        kid, colon, encoded = item.partition(":")
        kid = kid.strip()
        if not colon:
            raise SigningKeyError(
                f"{where}: key {number} is not written <key id>:<base64 secret> (no ':')"
            )
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SigningKeyError(
                f"{where}: the secret of key {kid[:40]!r} is not base64"
            ) from None
        check_key(kid, secret, where)
        if any(k.key_id == kid for k in keys):
            raise SigningKeyError(f"{where}: key id {kid} appears twice")
        keys.append(SigningKey(kid, secret))
    if not keys:
        raise SigningKeyError(f"{where}: no key given (write <key id>:<base64 secret>)")
    return SigningKeys(tuple(keys))


def read_keys_file(path: str | Path, where: str | None = None) -> SigningKeys:
    """The keys in the file at ``path`` (the syntax of ``CELERIAC_SIGNING_KEYS``)."""
    label = where or f"signing keys file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SigningKeyError(f"{label}: cannot read it ({reason})") from None
    return parse_keys(text, label)


def keys_from_env(env: Mapping[str, str]) -> SigningKeys | None:
    """The keys ``CELERIAC_SIGNING_KEYS`` or ``CELERIAC_SIGNING_KEYS_FILE`` give; None
    when neither is set (signing off). Both set is a mistake, said as such."""
    inline = env.get(ENV_KEYS, "").strip()
    path = env.get(ENV_KEYS_FILE, "").strip()
    if inline and path:
        raise SigningKeyError(f"set {ENV_KEYS} or {ENV_KEYS_FILE}, not both")
    if inline:
        return parse_keys(inline, f"${ENV_KEYS}")
    if path:
        return read_keys_file(path, f"${ENV_KEYS_FILE} ({path})")
    return None


def as_keys(value: SigningKeys | str | Iterable[tuple[str, bytes]], where: str) -> SigningKeys:
    """``value`` as keys: ``SigningKeys``, text in the syntax of ``CELERIAC_SIGNING_KEYS``,
    or ``(key id, secret bytes)`` pairs, the signing key first."""
    if isinstance(value, SigningKeys):
        return value
    if isinstance(value, str):
        return parse_keys(value, where)
    pairs = list(value)
    for kid, secret in pairs:
        check_key(kid, secret, where)
    if len({kid for kid, _ in pairs}) != len(pairs):
        raise SigningKeyError(f"{where}: a key id appears twice")
    if not pairs:
        raise SigningKeyError(f"{where}: no key given")
    return SigningKeys(tuple(SigningKey(kid, secret) for kid, secret in pairs))
