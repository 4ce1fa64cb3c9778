"""ack_position: (times delivered, stream sequence) from a JetStream ack subject."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from celeriac.worker_runtime.delivery import ack_position

VALID = [
    # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    ("$JS.ACK.CELERIAC_q.workers.3.17.12.1700000000000000000.5", (3, 17)),
    ("$JS.ACK.S.C.1.1.1.1700000000000000000.0", (1, 1)),
    ("$JS.ACK.S.C.12345.98765432101.4.1700000000000000000.0", (12345, 98765432101)),
    # v2 with domain and account hash, and the random token (12 tokens)
    ("$JS.ACK.hub.ACCHASH.CELERIAC_q.workers.2.40.39.1700000000000000000.0.rnd123", (2, 40)),
    # no domain ("_"), 12 tokens
    ("$JS.ACK._.ACCHASH.CELERIAC_q.workers.7.8.6.1700000000000000000.3.xyz", (7, 8)),
    # v2 without the random token (11 tokens)
    ("$JS.ACK.hub.ACCHASH.CELERIAC_q.workers.4.1000.900.1700000000000000000.0", (4, 1000)),
]


@pytest.mark.parametrize(("reply", "expected"), VALID)
def test_valid_ack_subjects(reply: str, expected: tuple[int, int]) -> None:
    assert ack_position(reply) == expected


@pytest.mark.parametrize(("reply", "expected"), VALID)
def test_agrees_with_nats_py_metadata(reply: str, expected: tuple[int, int]) -> None:
    meta = Msg.Metadata._from_reply(reply)
    assert ack_position(reply) == (meta.num_delivered, meta.sequence.stream)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "_INBOX.x",
        "_INBOX.abc.def.ghi.jkl.mno.pqr.stu.vwx",  # 9 tokens, not $JS.ACK
        "$JS.NAK.S.C.1.2.3.4.5",
        "$JS.ACK.S.C.1.2.3.4",  # 8 tokens: too few
        "$JS.ACK",
        "$JS.ACK.S.C.one.2.3.4.5",  # delivered not numeric
        "$JS.ACK.S.C.1.two.3.4.5",  # stream sequence not numeric
        "$JS.ACK.hub.HASH.S.C.x.2.3.4.5.r",  # v2, delivered not numeric
        "$JS.ACK.hub.HASH.S.C.1.y.3.4.5",  # v2 (11), stream sequence not numeric
    ],
)
def test_invalid_subjects_raise_value_error(reply: str) -> None:
    with pytest.raises(ValueError):
        ack_position(reply)
