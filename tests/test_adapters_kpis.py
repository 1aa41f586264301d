"""Each dataset replayed through offline `compute` (the worker's engine) gives the pandas KPIs.

Every mapped event must be valid under the contract, and the KPIs the engine computes from them
must equal the figures computed with pandas from the raw files (tests/expectations.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from stream_kpis.adapters import get
from stream_kpis.compute import compute
from stream_kpis.engine import EngineConfig
from stream_kpis.events import ContractConfig
from stream_kpis.timefmt import parse_timestamp
from stream_kpis.windows import parse_windows
from tests import expectations

pytestmark = pytest.mark.slow


def snapshot(events: Iterable[dict], windows: list[str], as_of: str | None = None) -> dict:
    lines = [json.dumps(event).encode() for event in events]
    return compute(
        lines,
        config=EngineConfig(windows=parse_windows(windows)),
        contract=ContractConfig(),
        as_of=None if as_of is None else parse_timestamp(as_of),
    )


def kpi(snap: dict, name: str, *, window: str = "all", scope: str = "all") -> dict[str, Any]:
    return snap["windows"][window][scope][name]


def assert_ratio(entry: dict[str, Any], expected: expectations.Ratio) -> None:
    assert float(entry["numerator"]) == pytest.approx(float(expected.numerator), rel=1e-9)
    assert float(entry["denominator"]) == pytest.approx(float(expected.denominator), rel=1e-9)


def assert_all_accepted(snap: dict, count: int) -> None:
    assert snap["events"]["invalid"] == {}
    assert snap["events"]["duplicate"] == 0
    assert snap["events"]["accepted"] == count


def test_shoppers_sessions_and_conversion():
    events = list(get("shoppers").events())
    snap = snapshot(events, ["30d"])
    figures = expectations.shoppers()

    assert_all_accepted(snap, len(events))
    assert_ratio(kpi(snap, "session_conversion_rate"), figures.session_conversion_rate)
    assert_ratio(kpi(snap, "visitor_conversion_rate"), figures.visitor_conversion_rate)
    assert_ratio(
        kpi(snap, "average_session_duration_seconds"), figures.average_session_duration_seconds
    )


@pytest.fixture(scope="module")
def telco_quarter() -> dict:
    events = list(get("telco").events())
    snap = snapshot(events, ["quarter=90d/1h"], as_of="2018-04-01T00:00:00Z")
    assert_all_accepted(snap, len(events))
    return snap


@pytest.mark.parametrize("contract", [None, "Month-to-month", "One year", "Two year"])
def test_telco_quarter(telco_quarter, contract):
    snap = telco_quarter
    figures = expectations.telco(contract=contract)
    scope = "all" if contract is None else "-".join(contract.lower().split())

    for name in ("churn_rate", "customer_retention_rate", "net_dollar_retention"):
        assert_ratio(kpi(snap, name, window="quarter", scope=scope), getattr(figures, name))
    grr = kpi(snap, "gross_revenue_retention", window="quarter", scope=scope)
    assert_ratio(grr, figures.gross_revenue_retention)


@pytest.mark.skipif(not expectations.KKBOX_DIR.is_dir(), reason="KKBox sample not available")
def test_kkbox_churn_and_sessions():
    events = list(get("kkbox").events(expectations.KKBOX_DIR))
    snap = snapshot(events, ["30d"])
    figures = expectations.kkbox()

    assert_all_accepted(snap, len(events))
    assert snap["events"]["no_effect"] == 0
    assert_ratio(kpi(snap, "churn_rate"), figures.churn_rate_all)
    assert_ratio(
        kpi(snap, "average_session_duration_seconds"), figures.average_session_duration_seconds
    )


@pytest.mark.skipif(not expectations.CDNOW_TXT.is_file(), reason="CDNOW not available")
def test_cdnow_repeat_customers():
    events = list(get("cdnow").events(expectations.CDNOW_TXT))
    snap = snapshot(events, ["30d"])

    assert_all_accepted(snap, len(events))
    assert_ratio(kpi(snap, "repeat_customer_rate"), expectations.cdnow().repeat_customer_rate)
