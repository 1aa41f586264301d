"""The online-shoppers mapping against pandas figures over the raw file."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pandas as pd
import pytest

from stream_kpis.adapters import get, shoppers
from tests import expectations


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(shoppers.iter_events(expectations.SHOPPERS_CSV))


@pytest.fixture(scope="module")
def figures() -> expectations.ShoppersFigures:
    return expectations.shoppers()


def _sessions(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "session"]


def test_one_session_per_row(events, figures):
    sessions = _sessions(events)
    assert len(sessions) == figures.sessions == 12_330
    assert len({e["visitor_id"] for e in sessions}) == figures.sessions


def test_session_conversion_matches_revenue_share(events, figures):
    sessions = _sessions(events)
    converted = sum(1 for e in sessions if e["converted"])
    assert converted == figures.converted_sessions
    assert converted / len(sessions) == pytest.approx(figures.session_conversion_rate.value)


def test_mean_duration_counts_unmeasured_as_zero(events, figures):
    durations = [e["duration_seconds"] for e in _sessions(events)]
    assert min(durations) == 0
    assert sum(durations) / len(durations) == pytest.approx(
        figures.average_session_duration_seconds.value, rel=1e-12
    )


def test_each_converting_session_has_its_purchase(events, figures):
    purchases = {e["customer_id"]: e for e in events if e["type"] == "purchase"}
    converting = [e for e in _sessions(events) if e["converted"]]
    assert len(purchases) == figures.converted_sessions
    for session in converting:
        purchase = purchases[session["visitor_id"]]
        assert purchase["occurred_at"] == session["occurred_at"]
        assert purchase["amount"] == "0.00"


def test_purchases_can_be_left_out():
    events = list(shoppers.iter_events(expectations.SHOPPERS_CSV, purchases=False))
    assert {e["type"] for e in events} == {"session"}


def test_sessions_fall_in_their_month_and_weekend_flag_of_2017(events):
    raw = pd.read_csv(expectations.SHOPPERS_CSV)
    month = pd.to_datetime(raw["Month"].str[:3] + " 2017", format="%b %Y").dt.month
    for session in _sessions(events):
        row = int(session["event_id"].split("-")[1])
        ended = datetime.fromisoformat(session["occurred_at"])
        assert ended.year == 2017
        assert ended.month == month[row]
        assert (ended.weekday() >= 5) == bool(raw["Weekend"][row])


def test_sessions_per_month(events, figures):
    per_month = Counter(datetime.fromisoformat(e["occurred_at"]).month for e in _sessions(events))
    assert dict(per_month) == figures.sessions_per_month


def test_order_ids_and_json(events):
    assert len({e["event_id"] for e in events}) == len(events)
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)
    assert all(t.endswith("Z") for t in times)
    json.dumps(events)  # JSON-ready


def test_start_moves_the_first_event():
    start = datetime(2026, 1, 5, 12, tzinfo=UTC)
    events = list(shoppers.iter_events(expectations.SHOPPERS_CSV, start=start, program="shop"))
    assert events[0]["occurred_at"] == "2026-01-05T12:00:00Z"
    assert {e["program"] for e in events} == {"shop"}


def test_registry_reads_the_bundled_copy(events):
    assert list(get("shoppers").events()) == events
