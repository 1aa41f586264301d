"""What one subject adds to the KPI components, as a function of the window start w0.

Every component of KPI-SPEC section 4 is a sum over subjects of a step function of w0 (the
clock T fixed, and no fact of the subject later than T). Such a function is stored as

    value(w0) = base + sum of delta_k for every k with w0 <= x_k

so a scope's part is a dict {(component, x): delta} with x = None for the base. The x values
are floored to the finest bucket: since every window start is a multiple of its bucket,
`w0 <= x` and `w0 <= floor(x)` agree. Adding contributions of many subjects gives per-bucket
histograms; a window is then `base + sum of the buckets at or after w0`, and `all` is
`base + every bucket`.

A contribution maps a tuple of scopes to the part they share: a subject of one programme (most
subjects) adds the same part to its programme and to `all`, so it is built, stored and applied
once, as {(program, "all"): part}; a subject of several programmes has one part per programme
and one for `all`.

Facts later than the clock are left out, and the clock at which the next one comes due (or an
unfinished session times out) is returned, so that the caller can recompute then.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from stream_kpis.kpis import (
    HISTOGRAM_COMPONENTS,
    SESSION_DURATION_BUCKETS_SECONDS,
    SURVEY_COMPONENTS,
)
from stream_kpis.subject import (
    CANCELLED,
    CHANGED,
    OLD_FIELDS,
    RENEWED,
    SEP,
    STARTED,
    Record,
    SessionRules,
    survey_counts,
)

ALL_SCOPE = "all"
# Folded items older than every window are stored at this time: before any window start.
ANCIENT = 0.0

Key = tuple[str, int | None]  # (component, x floored to the fine bucket)
Part = dict[Key, Any]
Contribution = dict[tuple[str, ...], Part]

_ZERO = Decimal(0)
_ANCIENT_BUCKET = math.floor(ANCIENT)
# The nonzero (component, count) pairs of one survey answer, by (kind, score): `survey_counts`
# remembered, since the same few answers repeat.
_SURVEY_PAIRS: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {}


class _Facts:
    """The facts of one scope that count at the clock."""

    __slots__ = ("transitions", "revenue_times", "advocacy_time", "sessions", "surveys", "old")

    def __init__(self) -> None:
        # (time, seq, subscription name, active after, mrr after)
        self.transitions: list[tuple[float, int, str, bool, Decimal]] = []
        self.revenue_times: list[float] = []
        self.advocacy_time: float | None = None
        self.sessions: list[list[Any]] = []
        self.surveys: list[list[Any]] = []
        self.old: list[list[Any]] = []

    def merge(self, other: _Facts) -> None:
        self.transitions.extend(other.transitions)
        self.revenue_times.extend(other.revenue_times)
        if other.advocacy_time is not None and (
            self.advocacy_time is None or other.advocacy_time < self.advocacy_time
        ):
            self.advocacy_time = other.advocacy_time
        self.sessions.extend(other.sessions)
        self.surveys.extend(other.surveys)
        self.old.extend(other.old)


class _Due:
    """The earliest clock after `clock` at which the contribution changes."""

    __slots__ = ("clock", "at")

    def __init__(self, clock: float) -> None:
        self.clock = clock
        self.at: float | None = None

    def counts(self, time: float) -> bool:
        if time <= self.clock:
            return True
        if self.at is None or time < self.at:
            self.at = time
        return False


def contribution(
    record: Record, *, clock: float, fine_bucket_seconds: int, rules: SessionRules
) -> tuple[Contribution, float | None]:
    """The subject's contribution at `clock`, and when it next changes (or None)."""
    due = _Due(clock)
    by_program = _facts_by_program(record, due, rules)
    if not by_program:
        return {}, due.at

    if len(by_program) == 1:
        ((program, facts),) = by_program.items()
        return {(program, ALL_SCOPE): _scope_contribution(facts, fine_bucket_seconds)}, due.at

    result: Contribution = {}
    everything = _Facts()
    for program, facts in by_program.items():
        result[(program,)] = _scope_contribution(facts, fine_bucket_seconds)
        everything.merge(facts)
    result[(ALL_SCOPE,)] = _scope_contribution(everything, fine_bucket_seconds)
    return result, due.at


def _facts_by_program(record: Record, due: _Due, rules: SessionRules) -> dict[str, _Facts]:
    facts: dict[str, _Facts] = {}

    def of(program: str) -> _Facts:
        found = facts.get(program)
        if found is None:
            found = facts[program] = _Facts()
        return found

    for name, history in record["subs"].items():
        program = name.partition(SEP)[0]
        _subscription_transitions(name, history, due, of(program))
    for name, time in record["orders"].items():
        if due.counts(time):
            of(name.partition(SEP)[0]).revenue_times.append(time)
    for program, time in record["adv"].items():
        if due.counts(time):
            of(program).advocacy_time = time
    for program, items in record["sess"].items():
        counted = [item for item in items if due.counts(item[0])]
        if counted:
            of(program).sessions.extend(counted)
    for name, (start, end, latest, converted, goal) in record["open"].items():
        # An unfinished session counts once the clock has passed its inactivity timeout.
        final_at = rules.final_at(latest)
        if due.counts(final_at) and start is not None and end is None and latest >= start:
            of(name.partition(SEP)[0]).sessions.append([latest, latest - start, converted, goal])
    for program, items in record["surv"].items():
        counted = [item for item in items if due.counts(item[0])]
        if counted:
            of(program).surveys.extend(counted)
    for program, totals in record["old"].items():
        of(program).old.append(totals)
    return facts


def _subscription_transitions(
    name: str, history: list[list[Any]], due: _Due, facts: _Facts
) -> None:
    """Walk one subscription's events in event-time order; keep those that change it."""
    active = False
    mrr = _ZERO
    for time, seq, kind, mrr_text in history:
        if not due.counts(time):
            continue
        revenue = False
        if kind == STARTED:
            revenue = not active
            active, mrr = True, Decimal(mrr_text)
        elif not active:
            continue
        elif kind == CHANGED:
            mrr = Decimal(mrr_text)
        elif kind == RENEWED:
            revenue = True
            if mrr_text is not None:
                mrr = Decimal(mrr_text)
        elif kind == CANCELLED:
            active, mrr = False, _ZERO
        facts.transitions.append((time, seq, name, active, mrr))
        if revenue:
            facts.revenue_times.append(time)


def _scope_contribution(facts: _Facts, fine: int) -> Part:
    out: Part = {}

    def add(component: str, x: float | None, value: Any) -> None:
        if not value:
            return
        key = (component, None if x is None else math.floor(x / fine) * fine)
        out[key] = out.get(key, 0) + value

    _cohort(facts.transitions, fine, add)
    _revenue(facts, add)
    _sessions(facts, out, fine)
    _surveys(facts, out, fine)
    return {key: value for key, value in out.items() if value}


def _cohort(transitions: list[tuple[float, int, str, bool, Decimal]], fine: int, add: Any) -> None:
    """Churn, retention, NDR and GRR components from the customer's activity timeline."""
    if not transitions:
        return
    transitions.sort(key=lambda item: (item[0], item[1]))

    # State after each group of transitions sharing a fine bucket.
    subscriptions: dict[str, Decimal] = {}
    groups: list[tuple[float, bool, Decimal, bool, bool]] = []
    for time, _, name, active, mrr in transitions:
        key = math.floor(time / fine) * fine
        was_active = bool(subscriptions)
        if active:
            subscriptions[name] = mrr
        else:
            subscriptions.pop(name, None)
        now_active = bool(subscriptions)
        activated = not was_active and now_active
        deactivated = was_active and not now_active
        total = sum(subscriptions.values(), _ZERO)
        if groups and groups[-1][0] == key:
            _, _, _, had_activation, had_deactivation = groups[-1]
            activated, deactivated = activated or had_activation, deactivated or had_deactivation
            groups[-1] = (key, now_active, total, activated, deactivated)
        else:
            groups.append((key, now_active, total, activated, deactivated))

    final_active, final_mrr = groups[-1][1], groups[-1][2]

    def value_at(index: int, activation_later: bool, deactivation_later: bool) -> tuple[Any, ...]:
        # w0 just at or before group `index`: the state at t0 is after group index - 1.
        start_active, start_mrr = (
            (groups[index - 1][1], groups[index - 1][2]) if index > 0 else (False, _ZERO)
        )
        return (
            int(start_active or activation_later),
            int(deactivation_later),
            int(start_active),
            int(start_active and final_active),
            start_mrr if start_active else _ZERO,
            final_mrr if start_active else _ZERO,
            min(start_mrr, final_mrr) if start_active else _ZERO,
        )

    names = (
        "customers_active_in_window",
        "churned_customers",
        "customers_active_at_start",
        "customers_retained",
        "mrr_at_start",
        "mrr_at_end_of_start_cohort",
        "mrr_retained",
    )
    later = value_at(len(groups), False, False)
    for name, value in zip(names, later, strict=True):
        add(name, None, value)
    activation_later = deactivation_later = False
    for index in range(len(groups) - 1, -1, -1):
        bucket, _, _, activated, deactivated = groups[index]
        activation_later = activation_later or activated
        deactivation_later = deactivation_later or deactivated
        here = value_at(index, activation_later, deactivation_later)
        for name, value, after in zip(names, here, later, strict=True):
            add(name, bucket, value - after)
        later = here


def _revenue(facts: _Facts, add: Any) -> None:
    """Conversion and repeat components from revenue, advocacy and session times."""
    revenue = sorted(facts.revenue_times)
    first = revenue[0] if revenue else None
    second = revenue[1] if len(revenue) > 1 else None

    if revenue:
        add("buyers", revenue[-1], 1)
        add("repeat_candidates", second, 1)  # x = None (no second yet): a candidate at every w0
    if second is not None:
        add("repeat_buyers", revenue[-2], 1)
        add("repeat_converted", second, 1)
        advocate = max(second, facts.advocacy_time) if facts.advocacy_time is not None else None
        add("advocate_candidates", advocate, 1)
        if advocate is not None:
            add("advocates_converted", advocate, 1)

    last_session = _last_session_end(facts)
    if last_session is not None:
        prospect_until = last_session if first is None else min(last_session, first)
        add("prospects", prospect_until, 1)
        if first is not None:
            add("prospects_converted", prospect_until, 1)


def _last_session_end(facts: _Facts) -> float | None:
    ends: Iterable[float] = [item[0] for item in facts.sessions]
    old_ends = [totals[0] for totals in facts.old if totals[0] is not None]
    return max([*ends, *old_ends], default=None)


def _sessions(facts: _Facts, out: Part, fine: int) -> None:
    # Written out rather than through `add`: sessions are most of a subject's facts, and this
    # runs for every session of a subject each time the subject changes.
    get = out.get
    for end, duration, converted, goal in facts.sessions:
        x = math.floor(end / fine) * fine
        key: Key = ("sessions", x)
        out[key] = get(key, 0) + 1
        if duration:
            key = ("session_duration_seconds", x)
            out[key] = get(key, 0) + duration
        if converted is True:
            key = ("converted_sessions", x)
            out[key] = get(key, 0) + 1
        if goal is not None:
            key = ("goal_sessions", x)
            out[key] = get(key, 0) + 1
            if goal is True:
                key = ("goal_reached_sessions", x)
                out[key] = get(key, 0) + 1
        key = (HISTOGRAM_COMPONENTS[bisect_left(SESSION_DURATION_BUCKETS_SECONDS, duration)], x)
        out[key] = get(key, 0) + 1
    for totals in facts.old:
        for name, value in zip(OLD_FIELDS[1:], totals[1:], strict=True):
            if value:
                key = (name, _ANCIENT_BUCKET)
                out[key] = get(key, 0) + value


def _surveys(facts: _Facts, out: Part, fine: int) -> None:
    get = out.get
    for time, kind, score in facts.surveys:
        x = math.floor(time / fine) * fine
        pairs = _SURVEY_PAIRS.get((kind, score))
        if pairs is None:
            counts = zip(SURVEY_COMPONENTS, survey_counts(kind, score), strict=True)
            pairs = _SURVEY_PAIRS[(kind, score)] = tuple(pair for pair in counts if pair[1])
        for name, value in pairs:
            key = (name, x)
            out[key] = get(key, 0) + value
