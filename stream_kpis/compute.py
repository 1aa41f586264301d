"""Offline `compute`: a file of events through the same engine as the worker, no Kafka.

A file is complete history: its valid events are applied in event-time order (then file
order), the clock being the newest event time applied so far, and the snapshot is read at the
newest event time in the file or at an explicit `as_of`. With `as_of`, events after it are
still validated (against `as_of` plus the allowed skew) and applied, but count nowhere until
the clock would pass them. Without `as_of`, events are validated against the wall clock, as
the worker does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from stream_kpis.engine import EngineConfig, Outcome, PartitionEngine
from stream_kpis.errors import StreamKpisError
from stream_kpis.events import TYPES_BY_TOPIC, ContractConfig, Event, Rejection, decode
from stream_kpis.outcomes import count_invalid, new_counts
from stream_kpis.snapshot import Judge, build_snapshot

logger = logging.getLogger(__name__)

TOPIC_OF_TYPE = {kind: topic for topic, kinds in TYPES_BY_TOPIC.items() for kind in kinds}
_PROGRESS_EVERY_LINES = 100_000
_REJECTIONS_SHOWN = 10


class ComputeError(StreamKpisError):
    """The events file cannot give a snapshot."""


class _TypeOnly(msgspec.Struct):
    type: Any = None


def topic_of(raw: bytes) -> str:
    """The topic an offline line belongs to, from its `type` (sessions when it has none)."""
    try:
        kind = msgspec.json.decode(raw, type=_TypeOnly).type
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return "sessions"
    return TOPIC_OF_TYPE.get(kind, "sessions") if isinstance(kind, str) else "sessions"


def compute(
    lines: Iterable[bytes],
    *,
    config: EngineConfig,
    contract: ContractConfig,
    as_of: float | None = None,
    judge: Judge | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The snapshot JSON (a dict) for the events in `lines` (one JSON object per line)."""
    counts = new_counts()
    valid: list[tuple[float, int, Event]] = []
    # Skew is measured against T when it is given, else against the wall clock, as the worker
    # does: a file's newest event cannot vouch for itself, and one line dated 9999 would
    # otherwise become the clock and empty every window.
    now = as_of if as_of is not None else wall_clock()
    for index, line in enumerate(lines):
        raw = line.strip()
        if not raw:
            continue
        if index and index % _PROGRESS_EVERY_LINES == 0:
            logger.info("read %d lines", index)
        result = decode(raw, topic_of(raw), now=now, config=contract)
        if isinstance(result, Rejection):
            count_invalid(counts, result.reason)
            _report_rejection(index + 1, result, sum(counts["invalid"].values()))
        else:
            valid.append((result.time, index, result))

    if as_of is None:
        if not valid:
            invalid = counts["invalid"]
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(invalid.items()))
            found = (
                f"no valid event, only {sum(invalid.values())} invalid lines ({reasons})"
                if invalid
                else "no event"
            )
            raise ComputeError(
                f"the events file holds {found}; pass --as-of for a snapshot with no KPIs"
            )
        as_of = max(event_time for event_time, _, _ in valid)

    valid.sort(key=lambda item: (item[0], item[1]))
    engine = PartitionEngine(config)
    for event_time, _, event in valid:
        applied = engine.apply(event, clock=min(event_time, as_of))
        _count(counts, applied.outcome, applied.late)
    engine.flush()
    logger.info(
        "applied %d valid events (%d duplicates) for %d subjects",
        len(valid),
        counts["duplicate"],
        engine.subject_count,
    )

    return build_snapshot(
        engine.read(as_of),
        as_of=as_of,
        window_names=[spec.name for spec in config.windows],
        events=counts,
        judge=judge,
    )


def _report_rejection(line_number: int, rejection: Rejection, rejected_so_far: int) -> None:
    """Say which line was invalid and why: the first few at WARNING, all at DEBUG.

    Only the line number, reason code and field name go above DEBUG; the detail can hold a
    value from the event (an id, say), so it is logged at DEBUG only.
    """
    if rejected_so_far <= _REJECTIONS_SHOWN:
        logger.warning(
            "line %d is invalid: %s%s",
            line_number,
            rejection.reason,
            f" (field {rejection.field})" if rejection.field else "",
        )
        if rejected_so_far == _REJECTIONS_SHOWN:
            logger.warning("further invalid lines are only counted (--log-level debug shows them)")
    logger.debug("line %d: %s", line_number, rejection.detail)


def _count(counts: dict[str, Any], outcome: Outcome, late: bool) -> None:
    if outcome is Outcome.DUPLICATE:
        counts["duplicate"] += 1
        return
    counts["accepted"] += 1
    if outcome is Outcome.NO_EFFECT:
        counts["no_effect"] += 1
    if late:
        counts["late"] += 1
