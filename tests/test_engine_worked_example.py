"""KPI-SPEC section 4's worked example, and the cohort KPIs around it, computed by hand."""

from decimal import Decimal

from tests.factories import event, run


def worked_example_events():
    return [
        event("subscription_started", "A", "2025-12-01T00:00", mrr=100),
        event("subscription_started", "B", "2025-12-05T00:00", mrr=50),
        event("subscription_started", "D", "2025-12-10T00:00", mrr=40),
        event("subscription_started", "E", "2025-12-20T00:00", mrr=60),
        event("subscription_cancelled", "D", "2026-01-03T00:00"),
        event("subscription_started", "C", "2026-01-05T00:00", mrr=80),
        event("subscription_changed", "A", "2026-01-10T00:00", mrr=150),
        event("subscription_changed", "E", "2026-01-12T00:00", mrr=30),
        event("subscription_cancelled", "B", "2026-01-15T00:00"),
        event("subscription_started", "D", "2026-01-20T00:00", mrr=40),
    ]


def test_worked_example_30d():
    counts = run(worked_example_events(), windows=("30d/1h",), as_of="2026-01-31T00:00")
    c = counts["30d"]["all"]
    assert (c["churned_customers"], c["customers_active_in_window"]) == (2, 5)
    assert (c["customers_retained"], c["customers_active_at_start"]) == (3, 4)
    assert c["mrr_at_start"] == Decimal(250)
    assert c["mrr_at_end_of_start_cohort"] == Decimal(150 + 0 + 40 + 30)
    assert c["mrr_retained"] == Decimal(100 + 0 + 40 + 30)
    # programme "default" is the only one, so it equals all
    assert counts["30d"]["default"] == c


def test_worked_example_revenue_events():
    # Revenue events: the 5 first starts and D's restart; A's and E's changes are not.
    counts = run(worked_example_events(), windows=("30d/1h",), as_of="2026-01-31T00:00")
    c = counts["30d"]["all"]
    # customers with a revenue event in W: C (5 Jan) and D (20 Jan)
    assert c["buyers"] == 2
    assert c.get("repeat_buyers", 0) == 0
    # repeat candidates: exactly one revenue event at t0 (A, B, E, D) or first in W (C); D's
    # second (its restart) is in W.
    assert c["repeat_candidates"] == 5
    assert c["repeat_converted"] == 1
    all_time = counts["all"]["all"]
    assert all_time["buyers"] == 5
    assert all_time["repeat_buyers"] == 1
    assert all_time["churned_customers"] == 2  # B and D ever went inactive
    assert all_time["customers_active_in_window"] == 5


def test_same_bucket_alignment_moves_window_start():
    # At 31 Jan 00:30 the 30d/1h window still starts at 1 Jan 00:00 (whole buckets).
    counts = run(worked_example_events(), windows=("30d/1h",), as_of="2026-01-31T00:30")
    assert counts["30d"]["all"]["customers_active_at_start"] == 4
    # At 31 Jan 01:00 it starts at 1 Jan 01:00: nothing changed between, same cohort.
    counts = run(worked_example_events(), windows=("30d/1h",), as_of="2026-01-31T01:00")
    assert counts["30d"]["all"]["customers_active_at_start"] == 4
    # At 3 Feb 00:00 it starts 4 Jan: D (cancelled 3 Jan) is no longer in the cohort.
    counts = run(worked_example_events(), windows=("30d/1h",), as_of="2026-02-03T00:00")
    c = counts["30d"]["all"]
    assert c["customers_active_at_start"] == 3  # A, B, E
    assert c["customers_retained"] == 2  # A, E
