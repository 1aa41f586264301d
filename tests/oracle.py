"""A deliberately naive reference for KPI-SPEC section 4, written straight from the definitions.

It replays the whole history for every question it is asked ("was this customer active just
before w0?"), with no buckets, no contributions and no incremental state, so it shares no
logic with the engine. Whole `session` events only (session parts are tested by hand).
"""

from __future__ import annotations

import math
from collections import defaultdict
from decimal import Decimal

from stream_kpis.events import Event


def _customer_timeline(events: list[Event]):
    """Per customer: list of (time, active_after, mrr_after, activated, deactivated, revenue)."""
    subs: dict[str, dict[str, tuple[bool, Decimal]]] = defaultdict(dict)
    out: dict[str, list] = defaultdict(list)
    orders: dict[tuple[str, str, str], float] = {}
    revenue_times: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.type == "purchase":
            key = (e.subject, e.program, e.order_id)
            orders[key] = min(orders.get(key, math.inf), e.time)
            continue
        if not e.type.startswith("subscription_"):
            continue
        name = f"{e.program}/{e.subscription_id or ''}"
        state = subs[e.subject]
        was_customer_active = any(active for active, _ in state.values())
        active, mrr = state.get(name, (False, Decimal(0)))
        revenue = False
        if e.type == "subscription_started":
            revenue = not active
            active, mrr = True, e.mrr
        elif not active:
            continue
        elif e.type == "subscription_changed":
            mrr = e.mrr
        elif e.type == "subscription_renewed":
            revenue = True
            mrr = e.mrr if e.mrr is not None else mrr
        else:
            active, mrr = False, Decimal(0)
        state[name] = (active, mrr)
        now_active = any(a for a, _ in state.values())
        total = sum((m for a, m in state.values() if a), Decimal(0))
        out[e.subject].append(
            (
                e.time,
                now_active,
                total,
                not was_customer_active and now_active,
                was_customer_active and not now_active,
            )
        )
        if revenue:
            revenue_times[e.subject].append(e.time)
    for (subject, _, _), time in orders.items():
        revenue_times[subject].append(time)
    return out, {s: sorted(t) for s, t in revenue_times.items()}


def _state_before(timeline, cutoff):
    active, mrr = False, Decimal(0)
    for time, now_active, total, *_ in timeline:
        if time < cutoff:
            active, mrr = now_active, total
    return active, mrr


def oracle_components(events: list[Event], *, w0: float | None, clock: float, scope: str):
    """Components for one window [w0, clock] (w0 None: `all`) and one scope."""
    ordered = sorted(
        (e for e in events if e.time <= clock and (scope == "all" or e.program == scope)),
        key=lambda e: e.time,  # stable: equal times keep arrival order
    )
    start = -math.inf if w0 is None else w0
    in_w = lambda t: start <= t <= clock  # noqa: E731
    timelines, revenue = _customer_timeline(ordered)
    c: dict[str, object] = defaultdict(int)

    for timeline in timelines.values():
        a0, m0 = _state_before(timeline, start)
        a1, m1 = timeline[-1][1], timeline[-1][2]
        activated_in_w = any(in_w(t) and act for t, _, _, act, _ in timeline)
        churned_in_w = any(in_w(t) and deact for t, _, _, _, deact in timeline)
        c["churned_customers"] += churned_in_w
        c["customers_active_in_window"] += a0 or activated_in_w
        if a0:
            c["customers_active_at_start"] += 1
            c["customers_retained"] += a1
            c["mrr_at_start"] += m0
            c["mrr_at_end_of_start_cohort"] += m1
            c["mrr_retained"] += min(m0, m1)

    promoter_time: dict[str, float] = {}
    for e in ordered:
        if e.type == "referral" or (
            e.type == "survey_response"
            and e.survey == "nps"
            and e.score >= (9 if e.scale == "0-10" else 4)
        ):
            promoter_time.setdefault(e.subject, e.time)
    session_subjects = {e.subject for e in ordered if e.type == "session" and in_w(e.time)}
    for subject in set(revenue) | session_subjects:
        times = revenue.get(subject, [])
        in_window = [t for t in times if in_w(t)]
        at_t0 = [t for t in times if t < start]
        if in_window:
            c["buyers"] += 1
            c["repeat_buyers"] += len(in_window) >= 2
        if (len(at_t0) == 1) or (times and in_w(times[0])):
            c["repeat_candidates"] += 1
            c["repeat_converted"] += len(times) >= 2 and in_w(times[1])
        if len(times) >= 2:
            p = promoter_time.get(subject)
            became_advocate = None if p is None else max(p, times[1])
            advocate_at_t0 = became_advocate is not None and became_advocate < start
            if not advocate_at_t0 or in_w(times[1]):
                c["advocate_candidates"] += 1
                c["advocates_converted"] += became_advocate is not None and in_w(became_advocate)
        if subject in session_subjects and not at_t0:
            c["prospects"] += 1
            c["prospects_converted"] += bool(times) and in_w(times[0])

    for e in ordered:
        if not in_w(e.time):
            continue
        if e.type == "session":
            c["sessions"] += 1
            c["session_duration_seconds"] += e.duration_seconds
            c["converted_sessions"] += e.converted is True
            c["goal_sessions"] += e.goal_reached is not None
            c["goal_reached_sessions"] += e.goal_reached is True
        elif e.type == "survey_response":
            if e.survey == "csat":
                c["csat_responses"] += 1
                c["csat_satisfied"] += e.score >= 4
            elif e.scale == "0-10":
                c["nps_responses"] += 1
                c["nps_promoters"] += e.score >= 9
                c["nps_detractors"] += e.score <= 6
            else:
                c["nps_5pt_responses"] += 1
                c["nps_5pt_promoters"] += e.score >= 4
                c["nps_5pt_detractors"] += e.score <= 2
    return {k: v for k, v in c.items() if v}
