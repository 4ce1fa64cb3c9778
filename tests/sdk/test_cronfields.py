"""The field-by-field cron rules a TaskSchedule's ``cron`` is checked with at ``kubectl apply``
(``celeriac.protocol.cronfields``), and how they line up with ``celeriac.cron``.

The API server runs the rules as CEL on every apply; the operator then turns the
cron into a schedule with ``celeriac.cron.nats_pattern``. Whatever the rules accept
should be accepted there too, and the other way round, except for the differences
listed below.
"""

from __future__ import annotations

import re

import pytest

from celeriac.cron import nats_pattern
from celeriac.protocol import cronfields

SHAPE = "must be 5 fields (minute hour day-of-month month day-of-week), 6 fields"
MACRO = "unknown macro: use @yearly, @annually, @monthly, @weekly, @daily"
SECOND = "the second field takes 0-59"
MINUTE = "the minute field takes 0-59"
HOUR = "the hour field takes 0-23"
DAY = "the day-of-month field takes 1-31"
MONTH = "the month field takes 1-12 or JAN-DEC"
WEEKDAY = "the day-of-week field takes 0-6 or SUN-SAT (Sunday is 0)"

MESSAGES = {cronfields.SHAPE_MESSAGE, cronfields.MACRO_MESSAGE} | {
    cronfields.field_message(f) for f in cronfields.FIELDS
}

# (cron, None when the rules accept it, else a fragment of the message they give)
CRONS: list[tuple[str, str | None]] = [
    # 5 fields, minute first.
    ("* * * * *", None),
    ("30 2 * * *", None),
    ("*/15 * * * *", None),
    ("*/1 * * * *", None),
    ("*/100 * * * *", None),
    ("0-30/10 * * * *", None),
    ("5/15 * * * *", None),
    ("1-1/5 * * * *", None),
    ("*,* * * * *", None),
    ("59 23 31 12 6", None),
    ("00 09 01 01 0", None),
    ("0 9 * * MON-FRI", None),
    ("0 9 * * mon-fri", None),
    ("5 4 * * sun-sat", None),
    ("0 0 * * 0/2", None),
    ("0 0 1 JAN *", None),
    ("0 0 1 jan,Jul *", None),
    ("0 0 1,15 * 1-5", None),
    ("  0  9 * *   mon-fri ", None),
    # 6 fields, second first.
    ("*/2 * * * * *", None),
    ("59 59 23 31 12 6", None),
    ("0 0 9 * * SUN", None),
    ("0 0 12 1-31/2 JAN,jul *", None),
    ("5/15 0-30/10 */6 * * *", None),
    ("0 0 * * * *  ", None),
    # Macros, in any case, with spaces around.
    ("@hourly", None),
    ("@HOURLY", None),
    (" @Daily ", None),
    ("@midnight", None),
    ("@weekly", None),
    ("@monthly", None),
    ("@yearly", None),
    ("@AnNuAlLy", None),
    # Each field well formed on its own; only the whole expression is wrong.
    ("5-2 * * * *", None),
    ("0 0 9 * * SAT-MON", None),
    ("0 0 9 * * MON-SUN", None),
    ("0 0 9 * FEB-JAN *", None),
    ("0 0 0 30 2 *", None),
    ("0 0 0 31 4 *", None),
    # Not 5 or 6 fields, or not a macro.
    ("", SHAPE),
    ("   ", SHAPE),
    ("* * * *", SHAPE),
    ("0 */2 * * * * *", SHAPE),
    ("0 0 9 * * * 2030", SHAPE),
    ("not a cron", SHAPE),
    ("0\t9 * * *", SHAPE),
    ("@every 5s", SHAPE),
    ("@ daily", SHAPE),
    ("@daily x", SHAPE),
    ("@every", MACRO),
    ("@reboot", MACRO),
    ("@fortnightly", MACRO),
    # Out of range, field by field.
    ("60 * * * * *", SECOND),
    ("61 * * * *", MINUTE),
    ("100 * * * *", MINUTE),
    ("0 24 * * *", HOUR),
    ("0 0 0 * *", DAY),
    ("0 0 32 * *", DAY),
    ("0 0 0 0 * *", DAY),
    ("0 0 * 13 *", MONTH),
    ("0 0 * 0 *", MONTH),
    ("0 0 * JAN-13 *", MONTH),
    ("0 0 * * 7", WEEKDAY),
    ("0 0 * * 5-7", WEEKDAY),
    ("0 0 1 1 * 2030", WEEKDAY),
    # Steps of zero, empty terms, letters and what other crons know.
    ("*/0 * * * *", MINUTE),
    ("0 0 0 * * 0-6/0", WEEKDAY),
    ("*/ * * * *", MINUTE),
    ("1,,2 * * * *", MINUTE),
    (",1 * * * *", MINUTE),
    ("1, * * * *", MINUTE),
    ("1-/2 * * * *", MINUTE),
    ("0 0 * * 1-", WEEKDAY),
    ("-1 * * * *", MINUTE),
    ("*-5 * * * *", MINUTE),
    ("1/2/3 * * * *", MINUTE),
    ("abc * * * *", MINUTE),
    ("MON * * * *", MINUTE),
    ("0 0 * JANUARY *", MONTH),
    ("0 0 * * MONDAY", WEEKDAY),
    ("0 0 ? * *", DAY),
    ("0 0 * * ?", WEEKDAY),
    ("0 0 L * *", DAY),
    ("0 0 15W * *", DAY),
    ("0 0 * * 5L", WEEKDAY),
    ("0 0 * * MON#2", WEEKDAY),
    ("0 0 * * 06", None),  # one leading zero, as in the other fields
    # Forms nats_pattern reads but the rules do not (see ONLY_NATS_PATTERN).
    ("\t0 9 * * *", MINUTE),
    ("007 * * * *", MINUTE),
    ("0 0 * 001 *", MONTH),
]

# Accepted by the rules, refused by nats_pattern: what needs the whole expression (the
# rules check each field on its own, as cronfields' docstring says). The API server
# takes these; the operator reports them in the TaskSchedule's status.
ONLY_CRONFIELDS = {
    # A range running backwards.
    "5-2 * * * *": "cron: bad minute field '5-2'",
    "0 0 9 * * SAT-MON": "cron: bad day-of-week field 'SAT-MON'",
    "0 0 9 * * MON-SUN": "cron: bad day-of-week field 'MON-SUN'",  # SUN is 0
    "0 0 9 * FEB-JAN *": "cron: bad month field 'FEB-JAN'",
    # A day that never comes.
    "0 0 0 30 2 *": "cron: bad day-of-month field '30'",
    "0 0 0 31 4 *": "cron: bad day-of-month field '31'",
}

# Refused by the rules, accepted by nats_pattern: the API server refuses a cron the
# SDK would schedule. nats_pattern splits on any whitespace, the rules on spaces only;
# nats_pattern takes any number of leading zeros, the rules at most one (two digits).
ONLY_NATS_PATTERN = {
    "\t0 9 * * *": "0 0 9 * * *",
    "0\t9 * * *": "0 0 9 * * *",
    "007 * * * *": "0 007 * * * *",
    "0 0 * 001 *": "0 0 0 * 001 *",
}


def _ids(rows: list[tuple[str, str | None]]) -> list[str]:
    return [repr(cron) for cron, _ in rows]


@pytest.mark.parametrize(("cron", "fragment"), CRONS, ids=_ids(CRONS))
def test_check_accepts_or_names_the_field(cron: str, fragment: str | None) -> None:
    if fragment is None:
        assert cronfields.check(cron) == cron
        return
    with pytest.raises(ValueError, match=re.escape(fragment)) as caught:
        cronfields.check(cron)
    assert str(caught.value) in MESSAGES


def _nats_pattern_accepts(cron: str) -> bool:
    try:
        nats_pattern(cron)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("cron", "fragment"), CRONS, ids=_ids(CRONS))
def test_nats_pattern_agrees_but_for_the_known_differences(cron: str, fragment: str | None) -> None:
    """What the API server accepts the SDK schedules, and the other way round."""
    accepted = fragment is None
    if cron in ONLY_CRONFIELDS:
        assert accepted
        with pytest.raises(ValueError) as caught:
            nats_pattern(cron)
        assert str(caught.value) == ONLY_CRONFIELDS[cron]
    elif cron in ONLY_NATS_PATTERN:
        assert not accepted
        assert nats_pattern(cron) == ONLY_NATS_PATTERN[cron]
    else:
        assert _nats_pattern_accepts(cron) is accepted


def test_the_known_differences_are_in_the_table() -> None:
    table = dict(CRONS)
    assert set(ONLY_CRONFIELDS) | set(ONLY_NATS_PATTERN) <= set(table)


def test_there_is_one_rule_per_field_plus_shape_and_macro() -> None:
    rules = cronfields.cel_rules()
    assert len(rules) == len(cronfields.FIELDS) + 2
    assert [r["message"] for r in rules] == [
        cronfields.SHAPE_MESSAGE,
        cronfields.MACRO_MESSAGE,
        *(cronfields.field_message(f) for f in cronfields.FIELDS),
    ]


_MATCHES = re.compile(r"self\.matches\('([^'\\]*)'\)")


@pytest.mark.parametrize("rule", cronfields.cel_rules(), ids=lambda r: r["message"][:30])
def test_rules_are_safe_cel_string_literals(rule: dict[str, str]) -> None:
    """No backslash (CEL would read it as an escape) and no quote inside a pattern."""
    text = rule["rule"]
    assert "\\" not in text
    patterns = _MATCHES.findall(text)
    assert patterns
    assert text.count("'") == 2 * len(patterns)
    for pattern in patterns:
        re.compile(pattern)


def _holds(rule: str, cron: str) -> bool:
    """A rule of the forms cel_rules writes (``[!]self.matches('p') || ...``), in Python."""
    for term in rule.split(" || "):
        negated = term.startswith("!")
        match = _MATCHES.fullmatch(term.removeprefix("!"))
        assert match is not None, term
        if (re.search(match[1], cron) is not None) != negated:
            return True
    return False


@pytest.mark.parametrize(("cron", "fragment"), CRONS, ids=_ids(CRONS))
def test_the_cel_rules_say_what_check_says(cron: str, fragment: str | None) -> None:
    """The first rule that fails gives the message check raises."""
    failing = [r["message"] for r in cronfields.cel_rules() if not _holds(r["rule"], cron)]
    if fragment is None:
        assert failing == []
    else:
        assert failing
        assert fragment in failing[0]


@pytest.mark.parametrize("cron", ["0 9 * * *\n", "@daily\n"])
def test_a_final_newline_is_refused_as_the_api_server_refuses_it(cron: str) -> None:
    with pytest.raises(ValueError):
        cronfields.check(cron)
