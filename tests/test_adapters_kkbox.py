"""The KKBox mapping against pandas figures over the raw sample (read from the shared folder)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from stream_kpis.adapters import kkbox
from stream_kpis.errors import DatasetError
from tests import expectations

pytestmark = pytest.mark.skipif(
    not expectations.KKBOX_DIR.is_dir(), reason=f"KKBox sample not at {expectations.KKBOX_DIR}"
)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(kkbox.iter_events(expectations.KKBOX_DIR))


@pytest.fixture(scope="module")
def figures() -> expectations.KkboxFigures:
    return expectations.kkbox()


def _replay(events: list[dict]) -> dict:
    """Apply the subscription events in order, as the contract says, with plain Python."""
    active: dict[str, bool] = defaultdict(bool)
    mrr: dict[str, Decimal] = {}
    deactivations = revenue_events = no_effect = 0
    churned = set()
    for event in events:
        customer, kind = event.get("customer_id"), event["type"]
        if kind in ("subscription_started", "subscription_renewed"):
            if kind == "subscription_renewed" and not active[customer]:
                no_effect += 1
                continue
            if kind == "subscription_started" and active[customer]:
                no_effect += 1  # only sets the MRR, not a revenue event
            else:
                revenue_events += 1
            active[customer] = True
            mrr[customer] = Decimal(event["mrr"])
        elif kind == "subscription_cancelled":
            if not active[customer]:
                no_effect += 1
                continue
            active[customer] = False
            deactivations += 1
            churned.add(customer)
    return {
        "customers": len(active),
        "cancellations": deactivations,
        "churned_customers": len(churned),
        "revenue_events": revenue_events,
        "active_at_end": sum(active.values()),
        "mrr_at_end": sum((mrr[c] for c, is_active in active.items() if is_active), Decimal(0)),
        "no_effect": no_effect,
    }


def test_subscription_figures_match_pandas(events, figures):
    assert _replay(events) == {
        "customers": figures.customers,
        "cancellations": figures.cancellations,
        "churned_customers": figures.churned_customers,
        "revenue_events": figures.revenue_events,
        "active_at_end": figures.active_at_end,
        "mrr_at_end": figures.mrr_at_end,
        "no_effect": 0,  # every cancel row ends an active subscription
    }


def test_every_cancel_row_is_a_cancellation(events):
    cancels = [e for e in events if e["type"] == "subscription_cancelled"]
    assert len(cancels) == 728


def test_sessions_match_user_days(events, figures):
    sessions = [e for e in events if e["type"] == "session"]
    assert len(sessions) == figures.sessions
    total = sum(e["duration_seconds"] for e in sessions)
    assert total / len(sessions) == pytest.approx(
        figures.average_session_duration_seconds.value, rel=1e-12
    )
    assert all(e["occurred_at"].endswith("T23:59:59Z") for e in sessions)


@pytest.mark.parametrize(
    ("amount", "days", "expected"),
    [
        (149, 30, "149.00"),
        (1788, 410, "130.83"),
        (149, 0, "149.00"),
        (0, 7, "0.00"),
        (99, 7, "424.29"),
    ],
)
def test_monthly_mrr(amount, days, expected):
    assert kkbox.monthly_mrr(amount, days) == expected


def test_order_ids_and_no_currency(events):
    assert len({e["event_id"] for e in events}) == len(events)
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)
    assert not any("currency" in e for e in events)


def test_a_transactions_file_alone_gives_no_sessions():
    events = kkbox.iter_events(expectations.KKBOX_DIR / "transactions_sample.csv")
    assert "session" not in {e["type"] for e in events}


def test_a_folder_without_transactions_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="transactions"):
        kkbox.iter_events(tmp_path)
