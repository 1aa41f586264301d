"""Hand-computed cases for every KPI component (KPI-SPEC sections 2-4)."""

from __future__ import annotations

from decimal import Decimal

from stream_kpis.engine import Outcome
from tests.factories import engine, event, run, ts

W = ("30d/1h",)
AS_OF = "2026-01-31T00:00"  # 30d window starts 2026-01-01T00:00


def window(counts, scope="all", name="30d"):
    return counts[name].get(scope, {})


def test_reactivation_counts_once_in_churn_and_cohort():
    counts = run(
        [
            event("subscription_started", "a", "2025-12-01T00:00", mrr=10),
            event("subscription_cancelled", "a", "2026-01-05T00:00"),
            event("subscription_started", "a", "2026-01-10T00:00", mrr=20),
        ],
        windows=W,
        as_of=AS_OF,
    )
    c = window(counts)
    assert c["churned_customers"] == 1
    assert c["customers_active_in_window"] == 1
    assert c["customers_retained"] == 1  # active at both ends
    assert c["mrr_at_start"] == 10 and c["mrr_at_end_of_start_cohort"] == 20
    assert c["mrr_retained"] == 10
    assert c["buyers"] == 1  # the restart is a revenue event in W


def test_upgrade_then_downgrade():
    counts = run(
        [
            event("subscription_started", "a", "2025-12-01T00:00", mrr=100),
            event("subscription_changed", "a", "2026-01-05T00:00", mrr=150),
            event("subscription_changed", "a", "2026-01-20T00:00", mrr=80),
        ],
        windows=W,
        as_of=AS_OF,
    )
    c = window(counts)
    assert (c["mrr_at_start"], c["mrr_at_end_of_start_cohort"], c["mrr_retained"]) == (100, 80, 80)
    assert "churned_customers" not in c
    assert "buyers" not in c  # changes are not revenue events


def test_restart_of_an_active_subscription_only_sets_mrr():
    eng = engine(*W)
    eng.apply(event("subscription_started", "a", "2025-12-01T00:00", mrr=100), clock=ts(AS_OF))
    applied = eng.apply(
        event("subscription_started", "a", "2026-01-05T00:00", mrr=70), clock=ts(AS_OF)
    )
    assert applied.outcome is Outcome.ACCEPTED
    c = window(eng.read(ts(AS_OF)))
    assert c["mrr_at_end_of_start_cohort"] == 70
    assert "buyers" not in c  # not a revenue event: it did not activate anything


def test_renewal_after_cancellation_has_no_effect():
    eng = engine(*W)
    clock = ts(AS_OF)
    eng.apply(event("subscription_started", "a", "2025-12-01T00:00", mrr=100), clock=clock)
    eng.apply(event("subscription_cancelled", "a", "2026-01-02T00:00"), clock=clock)
    renewed = eng.apply(
        event("subscription_renewed", "a", "2026-01-03T00:00", mrr=120), clock=clock
    )
    changed = eng.apply(
        event("subscription_changed", "a", "2026-01-04T00:00", mrr=120), clock=clock
    )
    assert renewed.outcome is Outcome.NO_EFFECT and changed.outcome is Outcome.NO_EFFECT
    c = window(eng.read(clock))
    assert c["churned_customers"] == 1 and "buyers" not in c
    assert "mrr_at_end_of_start_cohort" not in c


def test_renewal_of_active_subscription_is_revenue():
    c = window(
        run(
            [
                event("subscription_started", "a", "2025-12-01T00:00", mrr=100),
                event("subscription_renewed", "a", "2026-01-01T00:00"),
                event("subscription_renewed", "a", "2026-01-30T00:00", mrr=110),
            ],
            windows=W,
            as_of=AS_OF,
        )
    )
    assert c["buyers"] == 1 and c["repeat_buyers"] == 1
    assert c["repeat_candidates"] == 1 and c["repeat_converted"] == 1
    assert c["mrr_at_end_of_start_cohort"] == 110


def test_start_and_churn_in_the_same_window():
    c = window(
        run(
            [
                event("subscription_started", "a", "2026-01-05T00:00", mrr=30),
                event("subscription_cancelled", "a", "2026-01-25T00:00"),
                event("subscription_started", "b", "2025-12-05T00:00", mrr=50),
            ],
            windows=W,
            as_of=AS_OF,
        )
    )
    assert c["churned_customers"] == 1
    assert c["customers_active_in_window"] == 2
    assert c["customers_active_at_start"] == 1 and c["customers_retained"] == 1  # only b


def test_subject_in_two_programmes():
    counts = run(
        [
            event("subscription_started", "a", "2025-12-01T00:00", mrr=10, program="web"),
            event("subscription_started", "a", "2025-12-02T00:00", mrr=20, program="app"),
            event("subscription_cancelled", "a", "2026-01-10T00:00", program="web"),
        ],
        windows=W,
        as_of=AS_OF,
    )
    web, app, everything = (window(counts, s) for s in ("web", "app", "all"))
    assert web["churned_customers"] == 1 and web.get("customers_retained", 0) == 0
    assert app.get("churned_customers", 0) == 0 and app["customers_retained"] == 1
    # across programmes the customer stayed active (the app subscription): no churn
    assert everything.get("churned_customers", 0) == 0
    assert everything["customers_retained"] == 1
    assert everything["mrr_at_start"] == 30 and everything["mrr_at_end_of_start_cohort"] == 20
    assert everything["mrr_retained"] == 20


def test_repeated_order_id_counts_its_earliest_occurrence():
    eng = engine(*W)
    clock = ts(AS_OF)
    first = eng.apply(
        event("purchase", "a", "2026-01-20T00:00", order_id="o1", amount=5), clock=clock
    )
    again = eng.apply(
        event("purchase", "a", "2025-12-20T00:00", order_id="o1", amount=5), clock=clock
    )
    assert first.outcome is Outcome.ACCEPTED and again.outcome is Outcome.NO_EFFECT
    c = window(eng.read(clock))
    # the order's earliest occurrence (20 Dec) is before the window: no buyer in W
    assert "buyers" not in c
    assert window(eng.read(clock), name="all")["buyers"] == 1


def test_duplicate_event_id_is_dropped_per_subject():
    eng = engine(*W)
    clock = ts("2026-01-22T00:00")  # within the 7-day dedup horizon of the original
    original = event("purchase", "a", "2026-01-20T00:00", order_id="o1", amount=5, event_id="x")
    resend = event("purchase", "a", "2026-01-21T00:00", order_id="o2", amount=5, event_id="x")
    other_subject = event(
        "purchase", "b", "2026-01-21T00:00", order_id="o2", amount=5, event_id="x"
    )
    assert eng.apply(original, clock=clock).outcome is Outcome.ACCEPTED
    assert eng.apply(resend, clock=clock).outcome is Outcome.DUPLICATE
    assert eng.apply(other_subject, clock=clock).outcome is Outcome.ACCEPTED  # ids are per subject
    assert window(eng.read(ts(AS_OF)))["buyers"] == 2


def test_dedup_horizon_forgets_old_ids():
    eng = engine(*W, dedup_horizon_seconds=86400)
    first = event("referral", "a", "2026-01-20T00:00", event_id="x")
    assert eng.apply(first, clock=ts("2026-01-20T00:00")).outcome is Outcome.ACCEPTED
    eng.flush()
    assert eng.apply(first, clock=ts("2026-01-20T12:00")).outcome is Outcome.DUPLICATE
    eng.flush()
    # two days later the id is forgotten: the resend counts as new (and has no effect)
    assert eng.apply(first, clock=ts("2026-01-22T12:00")).outcome is Outcome.NO_EFFECT


def test_redelivered_offset_is_skipped():
    eng = engine(*W)
    clock = ts(AS_OF)
    e = event("purchase", "a", "2026-01-20T00:00", order_id="o1", amount=5)
    assert eng.apply(e, clock=clock, source="subscriptions:0", offset=7).outcome is (
        Outcome.ACCEPTED
    )
    again = event("purchase", "a", "2026-01-20T00:00", order_id="o2", amount=5)
    assert eng.apply(again, clock=clock, source="subscriptions:0", offset=7).outcome is (
        Outcome.REDELIVERED
    )


def test_out_of_order_cancel_before_start_arrives():
    counts = run(
        [
            event("subscription_cancelled", "a", "2026-01-10T00:00"),
            event("subscription_started", "a", "2025-12-01T00:00", mrr=10),
        ],
        windows=W,
        as_of=AS_OF,
    )
    c = window(counts)
    assert c["churned_customers"] == 1 and c["customers_active_at_start"] == 1


def test_event_older_than_every_window_changes_standing_state_and_all():
    eng = engine(*W)
    clock = ts(AS_OF)
    applied = eng.apply(event("subscription_started", "a", "2025-06-01T00:00", mrr=10), clock=clock)
    assert applied.late
    counts = eng.read(clock)
    assert window(counts)["customers_active_at_start"] == 1  # still active: standing state
    assert window(counts, name="all")["buyers"] == 1
    assert "buyers" not in window(counts)


def test_session_kpis_and_histogram():
    c = window(
        run(
            [
                event(
                    "session",
                    "v1",
                    "2026-01-10T00:00",
                    session_id="s1",
                    duration_seconds=60,
                    converted=True,
                    goal_reached=True,
                ),
                event(
                    "session",
                    "v1",
                    "2026-01-11T00:00",
                    session_id="s2",
                    duration_seconds=240,
                    goal_reached=False,
                ),
                event("session", "v2", "2026-01-12T00:00", session_id="s1", duration_seconds=5),
                event("session", "v3", "2025-12-12T00:00", session_id="s1", duration_seconds=5),
            ],
            windows=W,
            as_of=AS_OF,
        )
    )
    assert c["sessions"] == 3 and c["session_duration_seconds"] == 305
    assert c["converted_sessions"] == 1
    assert (c["goal_reached_sessions"], c["goal_sessions"]) == (1, 2)
    assert c["session_duration_bucket_0"] == 1  # 5 s <= 10 s
    assert c["session_duration_bucket_2"] == 1  # 60 s <= 60 s
    assert c["session_duration_bucket_4"] == 1  # 240 s <= 300 s


def test_session_time_is_its_end():
    c = window(
        run(
            [
                event(
                    "session",
                    "v1",
                    "2026-01-31T05:00",
                    session_id="s1",
                    started_at="2025-12-31T23:00",
                    ended_at="2026-01-01T01:00",
                    duration_seconds=None,
                ),
            ],
            windows=W,
            as_of=AS_OF,
        )
    )
    assert c["sessions"] == 1


def test_session_parts_in_any_order_and_late_parts_change_nothing():
    eng = engine(*W)
    clock = ts("2026-01-10T00:30")
    parts = [
        event("session_ended", "v", "2026-01-10T00:20", session_id="s", converted=True),
        event("session_heartbeat", "v", "2026-01-10T00:10", session_id="s"),
        event("session_started", "v", "2026-01-10T00:00", session_id="s"),
    ]
    outcomes = [eng.apply(p, clock=clock).outcome for p in parts]
    assert outcomes == [Outcome.ACCEPTED] * 3
    late = eng.apply(event("session_ended", "v", "2026-01-10T00:25", session_id="s"), clock=clock)
    assert late.outcome is Outcome.NO_EFFECT
    c = window(eng.read(ts(AS_OF)))
    assert c["sessions"] == 1 and c["session_duration_seconds"] == 1200
    assert c["converted_sessions"] == 1


def test_session_end_before_start_never_counts():
    eng = engine(*W)
    clock = ts("2026-01-10T01:00")
    eng.apply(event("session_ended", "v", "2026-01-10T00:00", session_id="s"), clock=clock)
    closing = eng.apply(
        event("session_started", "v", "2026-01-10T00:30", session_id="s"), clock=clock
    )
    assert closing.outcome is Outcome.NO_EFFECT
    assert "sessions" not in window(eng.read(ts(AS_OF)))


def test_session_closed_by_inactivity_timeout():
    eng = engine(*W)  # timeout 30 min + grace 5 min
    eng.apply(
        event("session_started", "v", "2026-01-10T00:00", session_id="s"),
        clock=ts("2026-01-10T00:00"),
    )
    eng.apply(
        event("session_heartbeat", "v", "2026-01-10T00:12", session_id="s"),
        clock=ts("2026-01-10T00:12"),
    )
    # 00:46 is before 00:12 + 35 min: not final, counts nowhere yet
    assert "sessions" not in window(eng.read(ts("2026-01-10T00:46")))
    c = window(eng.read(ts("2026-01-10T00:47")))
    assert c["sessions"] == 1 and c["session_duration_seconds"] == 720
    assert "converted_sessions" not in c and "goal_sessions" not in c
    late = eng.apply(
        event("session_ended", "v", "2026-01-10T00:20", session_id="s", converted=True),
        clock=ts("2026-01-10T00:50"),
    )
    assert late.outcome is Outcome.NO_EFFECT
    assert window(eng.read(ts("2026-01-10T01:00")))["sessions"] == 1


def test_session_without_start_never_counts():
    eng = engine(*W)
    eng.apply(
        event("session_ended", "v", "2026-01-10T00:00", session_id="s"),
        clock=ts("2026-01-10T00:00"),
    )
    assert "sessions" not in window(eng.read(ts("2026-01-11T00:00")))


def test_nps_on_both_scales_are_kept_apart_and_csat():
    c = window(
        run(
            [
                event("survey_response", "a", "2026-01-10T00:00", survey="nps", score=10),
                event("survey_response", "b", "2026-01-10T00:01", survey="nps", score=6),
                event("survey_response", "c", "2026-01-10T00:02", survey="nps", score=8),
                event(
                    "survey_response", "d", "2026-01-10T00:03", survey="nps", score=4, scale="1-5"
                ),
                event(
                    "survey_response", "e", "2026-01-10T00:04", survey="nps", score=3, scale="1-5"
                ),
                event("survey_response", "f", "2026-01-10T00:05", survey="csat", score=4),
                event("survey_response", "g", "2026-01-10T00:06", survey="csat", score=3),
            ],
            windows=W,
            as_of=AS_OF,
        )
    )
    assert (c["nps_responses"], c["nps_promoters"], c["nps_detractors"]) == (3, 1, 1)
    assert (c["nps_5pt_responses"], c["nps_5pt_promoters"]) == (2, 1)
    assert "nps_5pt_detractors" not in c
    assert (c["csat_responses"], c["csat_satisfied"]) == (2, 1)


def test_visitor_repeat_and_advocate_conversion():
    c = window(
        run(
            [
                # v1: visitor in W, first purchase in W -> converted prospect
                event("session", "v1", "2026-01-05T00:00", session_id="s", duration_seconds=10),
                event("purchase", "v1", "2026-01-06T00:00", order_id="o1", amount=1),
                # v2: visitor in W, no purchase -> prospect not converted
                event("session", "v2", "2026-01-05T00:00", session_id="s", duration_seconds=10),
                # v3: customer before t0 -> not a prospect; second purchase in W -> repeat; promoter
                event("purchase", "v3", "2025-12-01T00:00", order_id="o1", amount=1),
                event("session", "v3", "2026-01-05T00:00", session_id="s", duration_seconds=10),
                event("survey_response", "v3", "2025-12-02T00:00", survey="nps", score=9),
                event("purchase", "v3", "2026-01-07T00:00", order_id="o2", amount=1),
            ],
            windows=W,
            as_of=AS_OF,
        )
    )
    assert (c["prospects_converted"], c["prospects"]) == (1, 2)
    # repeat candidates: v1 (first in W), v3 (exactly one at t0); v3 converted
    assert (c["repeat_converted"], c["repeat_candidates"]) == (1, 2)
    # v3 became repeat in W and was already a promoter: an advocate since 7 Jan
    assert (c["advocates_converted"], c["advocate_candidates"]) == (1, 1)
    # only v3 has a second revenue event, and its first is before W
    assert (c.get("repeat_buyers", 0), c["buyers"]) == (0, 2)


def test_future_event_counts_once_the_clock_passes_it():
    eng = engine("1h")
    eng.apply(event("referral", "a", "2026-01-10T00:10"), clock=ts("2026-01-10T00:00"))
    eng.apply(
        event("survey_response", "a", "2026-01-10T00:10", survey="csat", score=5),
        clock=ts("2026-01-10T00:00"),
    )
    assert "csat_responses" not in eng.read(ts("2026-01-10T00:05"))["1h"].get("all", {})
    assert eng.read(ts("2026-01-10T00:10"))["1h"]["all"]["csat_responses"] == 1


def test_windows_slide_on_the_clock_without_new_events():
    eng = engine("1h")
    eng.apply(
        event("survey_response", "a", "2026-01-10T00:10", survey="csat", score=5),
        clock=ts("2026-01-10T00:10"),
    )
    assert eng.read(ts("2026-01-10T01:09"))["1h"]["all"]["csat_responses"] == 1
    # w0 = floor(01:10:30 / 1 min) - 1 h = 00:10: still in
    assert eng.read(ts("2026-01-10T01:10:30"))["1h"]["all"]["csat_responses"] == 1
    assert "csat_responses" not in eng.read(ts("2026-01-10T01:11"))["1h"].get("all", {})
    assert eng.read(ts("2026-01-10T05:00"))["all"]["all"]["csat_responses"] == 1


def test_old_items_fold_without_changing_any_window():
    eng = engine("1h", "30d/1h")
    for day in range(1, 10):
        eng.apply(
            event(
                "session", "v", f"2025-11-0{day}T00:00", session_id=f"s{day}", duration_seconds=day
            ),
            clock=ts("2026-01-20T00:00"),
        )
    eng.apply(
        event("session", "v", "2026-01-19T00:00", session_id="new", duration_seconds=100),
        clock=ts("2026-01-20T00:00"),
    )
    before = eng.read(ts("2026-01-20T00:00"))
    eng.flush()  # folds the November sessions into the record's totals
    record = eng.records["v"]
    assert len(record["sess"]["default"]) == 1
    eng.rebuild(["v"], clock=ts("2026-01-20T00:00"))
    assert eng.read(ts("2026-01-20T00:00")) == before
    assert before["all"]["all"]["sessions"] == 10
    assert before["all"]["all"]["session_duration_seconds"] == 45 + 100


def test_money_is_summed_exactly():
    c = window(
        run(
            [
                event("subscription_started", s, "2025-12-01T00:00", mrr=Decimal("0.1"))
                for s in "abc"
            ],
            windows=W,
            as_of=AS_OF,
        )
    )
    assert c["mrr_at_start"] == Decimal("0.3")
