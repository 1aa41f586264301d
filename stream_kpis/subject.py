"""One subject's standing facts and how an accepted event changes them.

A subject record is a plain JSON-ready dict, so that it can live in a Faust table and travel
through its changelog unchanged. It holds facts, not counters: subscription events, first order
times, sessions and survey answers with their times. What a subject adds to the KPIs is derived
from these facts in `contribution.py`, for any clock, so that late and out-of-order events land
exactly where their event time says.

Record layout (keys are short because every record is serialised on every write):

    p      partition the record belongs to
    seq    arrival counter, orders events of equal time by arrival
    ids    {event_id: event time}            accepted ids within the dedup horizon
    off    {"topic:partition": offset}       last input offset applied (redelivery guard)
    n      {outcome: count}  the subject's messages by outcome (accepted, duplicate, no_effect,
           late): counted with the facts they changed, so that they recover together
    subs   {program SEP subscription_id: [[time, seq, kind, mrr], ...]}  sorted by (time, seq)
    orders {program SEP order_id: earliest time}
    adv    {program: earliest promoter NPS answer or referral time}
    open   {program SEP session_id: [start, end, latest, converted, goal_reached]}
    done   {program SEP session_id: end time}  sessions that are final
    sess   {program: [[end, duration_seconds, converted, goal_reached], ...]}
    surv   {program: [[time, kind, score], ...]}  kind: "csat", "nps" (0-10) or "nps5" (1-5)
    old    {program: [last_session_end, sessions..., surveys...]}  folded items older than
           every window (see OLD_FIELDS)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from stream_kpis.events import Event
from stream_kpis.kpis import HISTOGRAM_COMPONENTS, SESSION_COMPONENTS, SURVEY_COMPONENTS

SEP = "\x1f"
DEFAULT_SUBSCRIPTION = ""

Record = dict[str, Any]

# Subscription event kinds as stored in a record.
STARTED, CHANGED, RENEWED, CANCELLED = "start", "change", "renew", "cancel"
_SUBSCRIPTION_KINDS = {
    "subscription_started": STARTED,
    "subscription_changed": CHANGED,
    "subscription_renewed": RENEWED,
    "subscription_cancelled": CANCELLED,
}

# Folded totals of items older than every window, per programme.
OLD_FIELDS = (
    "last_session_end",
    *SESSION_COMPONENTS,
    *HISTOGRAM_COMPONENTS,
    *SURVEY_COMPONENTS,
)


@dataclass(frozen=True, slots=True)
class SessionRules:
    timeout_seconds: float
    grace_seconds: float

    def final_at(self, latest_part_time: float) -> float:
        """The clock at which an unfinished session becomes final by inactivity."""
        return latest_part_time + self.timeout_seconds + self.grace_seconds


def new_record(partition: int) -> Record:
    return {
        "p": partition,
        "seq": 0,
        "ids": {},
        "off": {},
        "n": {},
        "subs": {},
        "orders": {},
        "adv": {},
        "open": {},
        "done": {},
        "sess": {},
        "surv": {},
        "old": {},
    }


def apply_event(record: Record, event: Event, *, clock: float, rules: SessionRules) -> bool:
    """Apply an accepted, new event. Returns False when it has no effect."""
    record["seq"] += 1
    handler = _HANDLERS[event.type]
    return handler(record, event, clock, rules)


# -- sessions ------------------------------------------------------------------------------


def finalize_timed_out_sessions(record: Record, clock: float, rules: SessionRules) -> None:
    """Close the unfinished sessions whose inactivity timeout and grace have passed."""
    for name, (start, end, latest, converted, goal) in list(record["open"].items()):
        if clock < rules.final_at(latest):
            continue
        del record["open"][name]
        record["done"][name] = latest
        if start is not None and end is None and latest >= start:
            _add_session(record, name, latest, latest - start, converted, goal)


def _add_session(
    record: Record,
    name: str,
    end: float,
    duration_seconds: float,
    converted: bool | None,
    goal_reached: bool | None,
) -> None:
    program = name.partition(SEP)[0]
    record["sess"].setdefault(program, []).append([end, duration_seconds, converted, goal_reached])


def _session(record: Record, event: Event, clock: float, rules: SessionRules) -> bool:
    name = f"{event.program}{SEP}{event.session_id}"
    if name in record["done"]:
        return False
    record["open"].pop(name, None)
    record["done"][name] = event.time
    duration = event.duration_seconds if event.duration_seconds is not None else 0.0
    _add_session(record, name, event.time, duration, event.converted, event.goal_reached)
    return True


def _session_part(record: Record, event: Event, clock: float, rules: SessionRules) -> bool:
    name = f"{event.program}{SEP}{event.session_id}"
    if name in record["done"]:
        return False
    time = event.occurred_at
    part = record["open"].get(name)
    if part is None:
        part = record["open"][name] = [None, None, time, None, None]
    start, end, latest, _, _ = part
    if event.type == "session_started" and (start is None or time < start):
        part[0] = time
    elif event.type == "session_ended" and (end is None or time < end):
        part[1], part[3], part[4] = time, event.converted, event.goal_reached
    part[2] = max(latest, time)

    start, end = part[0], part[1]
    if start is None or end is None:
        return True
    del record["open"][name]
    record["done"][name] = end
    if end < start:
        return False
    _add_session(record, name, end, end - start, part[3], part[4])
    return True


# -- subscriptions and orders ----------------------------------------------------------------


def _subscription(record: Record, event: Event, clock: float, rules: SessionRules) -> bool:
    name = f"{event.program}{SEP}{event.subscription_id or DEFAULT_SUBSCRIPTION}"
    history = record["subs"].setdefault(name, [])
    mrr = str(event.mrr) if event.mrr is not None else None
    entry = [event.occurred_at, record["seq"], _SUBSCRIPTION_KINDS[event.type], mrr]
    bisect.insort(history, entry, key=lambda item: (item[0], item[1]))
    return _was_effective(history, entry)


def _was_effective(history: list[list[Any]], entry: list[Any]) -> bool:
    """Whether `entry` changes the subscription, evaluated in event-time order."""
    active = False
    for item in history:
        if item is entry:
            return item[2] == STARTED or active
        kind = item[2]
        if kind == STARTED:
            active = True
        elif kind == CANCELLED:
            active = False
    return False


def _purchase(record: Record, event: Event, clock: float, rules: SessionRules) -> bool:
    name = f"{event.program}{SEP}{event.order_id}"
    earliest = record["orders"].get(name)
    if earliest is None:
        record["orders"][name] = event.occurred_at
        return True
    if event.occurred_at < earliest:
        record["orders"][name] = event.occurred_at
    return False


# -- surveys ---------------------------------------------------------------------------------


def _survey_response(record: Record, event: Event, clock: float, rules: SessionRules) -> bool:
    assert event.score is not None
    if event.survey == "csat":
        kind, promoter = "csat", False
    elif event.scale == "1-5":
        kind, promoter = "nps5", event.score >= 4
    else:
        kind, promoter = "nps", event.score >= 9
    record["surv"].setdefault(event.program, []).append([event.occurred_at, kind, event.score])
    if promoter:
        _mark_advocacy(record, event)
    return True


def _referral(record: Record, event: Event, clock: float, rules: SessionRules) -> bool:
    earlier = record["adv"].get(event.program)
    _mark_advocacy(record, event)
    return earlier is None or event.occurred_at < earlier


def _mark_advocacy(record: Record, event: Event) -> None:
    earlier = record["adv"].get(event.program)
    if earlier is None or event.occurred_at < earlier:
        record["adv"][event.program] = event.occurred_at


_HANDLERS = {
    "session": _session,
    "session_started": _session_part,
    "session_heartbeat": _session_part,
    "session_ended": _session_part,
    **{kind: _subscription for kind in _SUBSCRIPTION_KINDS},
    "purchase": _purchase,
    "survey_response": _survey_response,
    "referral": _referral,
}


# -- bounding the record ---------------------------------------------------------------------


def forget_expired(record: Record, *, clock: float, dedup_horizon_seconds: float) -> None:
    """Drop event ids and final-session names whose dedup horizon has passed."""
    cutoff = clock - dedup_horizon_seconds
    for table in ("ids", "done"):
        expired = [key for key, time in record[table].items() if time < cutoff]
        for key in expired:
            del record[table][key]


def fold_old_items(record: Record, *, before: float, histogram_bounds: tuple[float, ...]) -> None:
    """Fold session and survey items older than `before` into per-programme totals.

    `before` must be older than the start of every window at this clock and at every later
    one, so that folding changes no window, only how `all` is stored.
    """
    for program, items in record["sess"].items():
        old_items = [item for item in items if item[0] < before]
        if not old_items:
            continue
        totals = _old_totals(record, program)
        for end, duration, converted, goal in old_items:
            totals[0] = end if totals[0] is None else max(totals[0], end)
            totals[1] += 1
            totals[2] += duration
            totals[3] += converted is True
            totals[4] += goal is not None
            totals[5] += goal is True
            totals[1 + len(SESSION_COMPONENTS) + histogram_index(duration, histogram_bounds)] += 1
        record["sess"][program] = [item for item in items if item[0] >= before]
    for program, items in record["surv"].items():
        old_items = [item for item in items if item[0] < before]
        if not old_items:
            continue
        totals = _old_totals(record, program)
        offset = 1 + len(SESSION_COMPONENTS) + len(HISTOGRAM_COMPONENTS)
        for _, kind, score in old_items:
            for position, value in enumerate(survey_counts(kind, score)):
                totals[offset + position] += value
        record["surv"][program] = [item for item in items if item[0] >= before]


def _old_totals(record: Record, program: str) -> list[Any]:
    totals = record["old"].get(program)
    if totals is None:
        totals = record["old"][program] = [None, *([0] * (len(OLD_FIELDS) - 1))]
    return totals


def histogram_index(duration_seconds: float, bounds: tuple[float, ...]) -> int:
    """Index of the first bucket whose upper bound holds the duration (len(bounds) = +Inf)."""
    return bisect.bisect_left(bounds, duration_seconds)


def survey_counts(kind: str, score: int) -> tuple[int, ...]:
    """Counts one answer adds to (csat n, satisfied, nps n, promoters, detractors, nps5 n, ...)."""
    if kind == "csat":
        return (1, int(score >= 4), 0, 0, 0, 0, 0, 0)
    if kind == "nps":
        return (0, 0, 1, int(score >= 9), int(score <= 6), 0, 0, 0)
    return (0, 0, 0, 0, 0, 1, int(score >= 4), int(score <= 2))
