"""Status bookkeeping shared by the handlers (pure).

Conditions keep their ``lastTransitionTime`` unless their status flips; the
autoscaler's memory round-trips through the WorkerPool status as RFC 3339 times;
and only fields that changed are patched, so a quiet pool causes no API writes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from celeriac.operator.autoscaling import Decision, ScalingState


def iso(timestamp: float) -> str:
    """Unix seconds as an RFC 3339 UTC time with second precision."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str | None) -> float | None:
    """An RFC 3339 time as Unix seconds; None for missing or unreadable values."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def condition(
    type_: str, ok: bool, reason: str, message: str, *, generation: int | None = None
) -> dict[str, Any]:
    """A condition without its transition time (see :func:`merge_conditions`)."""
    out: dict[str, Any] = {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def merge_conditions(
    old: list[Mapping[str, Any]] | None, new: list[dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """``old`` with ``new`` laid over it by type, keeping transition times that still hold."""
    by_type = {str(c.get("type")): dict(c) for c in old or []}
    for cond in new:
        previous = by_type.get(cond["type"])
        same = previous is not None and previous.get("status") == cond["status"]
        since = previous.get("lastTransitionTime") if same and previous else None
        by_type[cond["type"]] = {**cond, "lastTransitionTime": since or iso(now)}
    return list(by_type.values())


def status_update(
    status: Mapping[str, Any] | None,
    fields: Mapping[str, Any],
    conditions: list[dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    """The status patch: ``fields`` and merged ``conditions``, only what changed."""
    new = dict(fields)
    if conditions:
        new["conditions"] = merge_conditions((status or {}).get("conditions"), conditions, now)
    return changed_fields(status, new)


def write_status(
    patch_status: MutableMapping[str, Any],
    status: Mapping[str, Any] | None,
    fields: Mapping[str, Any],
    conditions: list[dict[str, Any]],
) -> None:
    """Put the status update (see :func:`status_update`, as of now) into a kopf patch."""
    patch_status.update(status_update(status, fields, conditions, time.time()))


def invalid_spec(
    patch_status: MutableMapping[str, Any],
    status: Mapping[str, Any] | None,
    generation: int | None,
    kind: str,
    exc: Exception,
) -> str:
    """Put ``Ready=False``, reason ``InvalidSpec``, into a kopf patch; the error message
    for the handler's ``PermanentError``."""
    bad = condition("Ready", False, "InvalidSpec", str(exc), generation=generation)
    write_status(patch_status, status, {"observedGeneration": generation}, [bad])
    return f"invalid {kind}: {exc}"


def changed_fields(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``new`` that differ from ``old`` (what a status patch must carry)."""
    before = old or {}
    return {k: v for k, v in new.items() if before.get(k) != v}


def scaling_state(status: Mapping[str, Any] | None) -> ScalingState:
    """The autoscaler's memory as stored in a WorkerPool status."""
    st = status or {}
    peak = st.get("scaleDownPeak")
    return ScalingState(
        last_scale_time=from_iso(st.get("lastScaleTime")),
        last_active_time=from_iso(st.get("lastActiveTime")),
        scale_down_since=from_iso(st.get("scaleDownSince")),
        scale_down_peak=int(peak) if peak is not None else None,
        scale_down_demand=_number(st.get("scaleDownDemand")),
        scale_down_polls=int(polls) if (polls := st.get("scaleDownPolls")) is not None else None,
        task_seconds=_number(st.get("taskSeconds")),
        start_seconds=_number(st.get("startSeconds")),
        starting_since=from_iso(st.get("startingSince")),
        scale_up_from=int(before) if (before := st.get("scaleUpFrom")) is not None else None,
        scale_up_since=from_iso(st.get("scaleUpSince")),
    )


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


def scaling_status(decision: Decision) -> dict[str, Any]:
    """The status fields recording ``decision`` and the autoscaler's memory."""
    state = decision.state

    def maybe(ts: float | None) -> str | None:
        return iso(ts) if ts is not None else None

    out: dict[str, Any] = {
        "desiredReplicas": decision.replicas,
        "lastScaleTime": maybe(state.last_scale_time),
        "lastActiveTime": maybe(state.last_active_time),
        "scaleDownSince": maybe(state.scale_down_since),
        "scaleDownPeak": state.scale_down_peak,
        "scaleDownDemand": state.scale_down_demand,
        "scaleDownPolls": state.scale_down_polls,
        "taskSeconds": state.task_seconds,
        "startSeconds": state.start_seconds,
        "startingSince": maybe(state.starting_since),
        "scaleUpFrom": state.scale_up_from,
        "scaleUpSince": maybe(state.scale_up_since),
    }
    if decision.changed:
        out["lastScaleReason"] = decision.reason
    return out
