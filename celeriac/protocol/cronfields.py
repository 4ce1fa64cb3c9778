"""The shape of a cron, as rules both the API server (CEL) and Python check alike.

A TaskSchedule's ``cron`` is refused at ``kubectl apply`` when it is not 5 fields
(minute first), 6 fields (second first) or a known macro, or when a field holds
something out of its range. The API server evaluates the rules as CEL
(``self.matches(...)``, RE2) and the models as Python regular expressions: the
patterns use only what both read the same way (no backslashes, ``[ ]`` for space).

These rules check each field on its own. What needs the whole expression (a range
running backwards, a day that never comes) is checked by ``celeriac.cron`` when the
operator turns the resource into a schedule, and reported in its status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MACROS = ("yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly")

_STEP = "/[0-9]*[1-9][0-9]*"
_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"


def _field(value: str) -> str:
    """A cron field: a list of ``*``, ``v`` or ``a-b``, each with an optional ``/step``."""
    term = f"([*]|({value})(-({value}))?)({_STEP})?"
    return f"{term}(,{term})*"


@dataclass(frozen=True)
class CronField:
    """One field of a cron: its name, what it takes, and its pattern."""

    name: str
    takes: str
    pattern: str
    after: int  # how many fields follow it


# In order; the second is there only in the 6-field form.
FIELDS = (
    CronField("second", "0-59", _field("[0-5]?[0-9]"), 5),
    CronField("minute", "0-59", _field("[0-5]?[0-9]"), 4),
    CronField("hour", "0-23", _field("[01]?[0-9]|2[0-3]"), 3),
    CronField("day-of-month", "1-31", _field("0?[1-9]|[12][0-9]|3[01]"), 2),
    CronField("month", "1-12 or JAN-DEC", _field(f"0?[1-9]|1[0-2]|(?i:{_MONTHS})"), 1),
    CronField("day-of-week", "0-6 or SUN-SAT (Sunday is 0)", _field(f"0?[0-6]|(?i:{_DAYS})"), 0),
)

_MACRO = "^ *@"
SHAPE = "^ *(@[A-Za-z]+|[^ ]+( +[^ ]+){4,5}) *$"
SHAPE_MESSAGE = (
    "must be 5 fields (minute hour day-of-month month day-of-week), 6 fields (second "
    "first) or a macro such as @daily"
)
KNOWN_MACRO = f"^ *@(?i:{'|'.join(MACROS)}) *$"
MACRO_MESSAGE = "unknown macro: use " + ", ".join(f"@{m}" for m in MACROS) + " (or every)"
_SIX_FIELDS = "^ *[^ ]+( +[^ ]+){5} *$"


def field_pattern(f: CronField) -> str:
    """A pattern matching a cron whose field ``f`` is well formed (at its position
    counted from the end, so it holds for the 5- and the 6-field form)."""
    if f.name == "second":
        return f"^ *({f.pattern}) "
    return f"(^|[ ])({f.pattern})( +[^ ]+){{{f.after}}} *$"


def field_message(f: CronField) -> str:
    """What a malformed field ``f`` is told."""
    return f"the {f.name} field takes {f.takes}, '*', ranges a-b, steps /n and lists of these"


def cel_rules() -> list[dict[str, str]]:
    """The CEL rules on a ``cron`` string (``self``), first failure first."""
    rules = [
        {"rule": f"self.matches('{SHAPE}')", "message": SHAPE_MESSAGE},
        {
            "rule": f"!self.matches('{_MACRO}') || self.matches('{KNOWN_MACRO}')",
            "message": MACRO_MESSAGE,
        },
    ]
    for f in FIELDS:
        # Only a well-shaped, non-macro cron is checked field by field (the second
        # field only in the 6-field form).
        applies = f"self.matches('{_SIX_FIELDS if f.name == 'second' else SHAPE}')"
        rule = f"self.matches('{_MACRO}') || !{applies} || self.matches('{field_pattern(f)}')"
        rules.append({"rule": rule, "message": field_message(f)})
    return rules


def _matches(pattern: str, text: str) -> bool:
    """``self.matches(pattern)`` as CEL (RE2) reads it: there ``$`` is the very end,
    where Python's ``$`` would also match before a final newline."""
    return re.search(pattern.replace("$", r"\Z"), text) is not None


def check(cron: str) -> str:
    """``cron`` if every rule holds, else ``ValueError`` with the first rule's message."""
    if not _matches(SHAPE, cron):
        raise ValueError(SHAPE_MESSAGE)
    if _matches(_MACRO, cron):
        if not _matches(KNOWN_MACRO, cron):
            raise ValueError(MACRO_MESSAGE)
        return cron
    six = _matches(_SIX_FIELDS, cron)
    for f in FIELDS:
        if (six or f.name != "second") and not _matches(field_pattern(f), cron):
            raise ValueError(field_message(f))
    return cron
