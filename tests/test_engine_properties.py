"""Property-based tests: the engine against a naive oracle, and order independence."""

from __future__ import annotations

import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_kpis.windows import parse_windows
from tests.factories import event, run
from tests.oracle import oracle_components

CLOCK = 1_767_225_600.0  # 2026-01-01T00:00:00Z
WINDOWS = ("1h", "24h", "7d", "30d/1h", "2d/6h")
SPECS = parse_windows(WINDOWS)

subjects = st.sampled_from(["ann", "bob", "cy", "dee"])
programs = st.sampled_from(["web", "app"])
money = st.integers(0, 300)


@st.composite
def kpi_events(draw):
    count = draw(st.integers(1, 40))
    # Distinct times, some in the same minute or hour, over the 40 days before the clock.
    offsets = draw(
        st.lists(st.integers(0, 40 * 86400 // 7), min_size=count, max_size=count, unique=True)
    )
    items = []
    for offset in offsets:
        time = CLOCK - offset * 7
        subject, program = draw(subjects), draw(programs)
        kind = draw(
            st.sampled_from(
                [
                    "subscription_started",
                    "subscription_started",
                    "subscription_changed",
                    "subscription_renewed",
                    "subscription_cancelled",
                    "purchase",
                    "session",
                    "survey_response",
                    "referral",
                ]
            )
        )
        fields = {"program": program}
        if kind.startswith("subscription_"):
            fields["subscription_id"] = draw(st.sampled_from([None, "second"]))
        if kind in ("subscription_started", "subscription_changed"):
            fields["mrr"] = draw(money)
        if kind == "subscription_renewed":
            fields["mrr"] = draw(st.none() | money)
        if kind == "purchase":
            fields["order_id"] = draw(st.sampled_from(["o1", "o2", "o3"]))
            fields["amount"] = draw(money)
        if kind == "session":
            fields["session_id"] = f"s{offset}"
            fields["duration_seconds"] = float(draw(st.integers(0, 9000)))
            fields["converted"] = draw(st.none() | st.booleans())
            fields["goal_reached"] = draw(st.none() | st.booleans())
        if kind == "survey_response":
            survey, scale, top = draw(
                st.sampled_from([("csat", "1-5", 5), ("nps", "0-10", 10), ("nps", "1-5", 5)])
            )
            fields.update(
                survey=survey, scale=scale, score=draw(st.integers(0 if top == 10 else 1, top))
            )
        items.append(event(kind, subject, time, **fields))
    return items


def _close(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def assert_matches_oracle(events, counts):
    for spec in SPECS:
        start = spec.start(CLOCK)
        for scope in ("all", "web", "app"):
            expected = oracle_components(events, w0=start, clock=CLOCK, scope=scope)
            got = {k: v for k, v in counts[spec.name].get(scope, {}).items() if v}
            got = {k: v for k, v in got.items() if not k.startswith("session_duration_bucket")}
            if spec.length_seconds is None:
                for cohort in (
                    "customers_active_at_start",
                    "customers_retained",
                    "mrr_at_start",
                    "mrr_at_end_of_start_cohort",
                    "mrr_retained",
                ):
                    got.pop(cohort, None)
            assert set(got) == set(expected), (spec.name, scope, got, expected)
            for key in expected:
                assert _close(got[key], expected[key]), (spec.name, scope, key, got, expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kpi_events())
def test_engine_equals_oracle_in_time_order(events):
    events.sort(key=lambda e: e.time)
    counts = run(events, windows=WINDOWS, as_of=CLOCK)
    assert_matches_oracle(events, counts)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kpi_events(), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_counts(events, rnd: random.Random):
    in_order = sorted(events, key=lambda e: e.time)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert run(shuffled, windows=WINDOWS, as_of=CLOCK) == run(
        in_order, windows=WINDOWS, as_of=CLOCK
    )


@given(
    st.floats(min_value=946_684_800, max_value=4_102_444_800, allow_nan=False),
    st.sampled_from(SPECS),
)
def test_each_time_lands_in_exactly_one_bucket(time, spec):
    size = spec.bucket_seconds
    bucket = math.floor(time / size) * size
    assert bucket <= time < bucket + size
    # and the window start is always a bucket boundary, so "time >= w0" agrees with its bucket
    start = spec.start(time + 12_345.6)
    if start is not None:
        assert start % size == 0
        assert (time >= start) == (bucket >= start)


@st.composite
def session_parts(draw):
    """Sessions reported in parts, all within 20 minutes of each other.

    At most one start and one end per session: a session is final as soon as both are known,
    so a second start or end arriving later has no effect by contract, whatever its time.
    """
    events = []
    for number in range(draw(st.integers(1, 8))):
        subject = draw(subjects)
        name = f"s{number}"
        start = CLOCK - draw(st.integers(0, 1200))
        kinds = draw(st.lists(st.just("heartbeat"), max_size=3))
        kinds += draw(st.sampled_from([["started"], ["ended"], ["started", "ended"]]))
        for kind in kinds:
            at = start + draw(st.integers(-120, 600))
            fields = {"session_id": name, "program": draw(programs)}
            if kind == "ended":
                fields["converted"] = draw(st.none() | st.booleans())
                fields["goal_reached"] = draw(st.none() | st.booleans())
            events.append(event(f"session_{kind}", subject, min(at, CLOCK), **fields))
    return events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session_parts(), st.randoms(use_true_random=False))
def test_session_parts_in_any_order_within_the_grace_period(events, rnd: random.Random):
    in_order = sorted(events, key=lambda e: e.time)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    # read well after every timeout, so that unfinished sessions are final too
    later = CLOCK + 3600
    assert run(shuffled, windows=WINDOWS, as_of=later) == run(
        in_order, windows=WINDOWS, as_of=later
    )
