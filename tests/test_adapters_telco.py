"""The telco mapping against pandas figures over the raw file, over the documented quarter."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from stream_kpis.adapters import telco
from tests import expectations

QUARTER_START = expectations.TELCO_QUARTER_START.to_pydatetime()
QUARTER_END = expectations.TELCO_QUARTER_END.to_pydatetime()
CONTRACTS = {"Month-to-month": "month-to-month", "One year": "one-year", "Two year": "two-year"}


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(telco.iter_events(expectations.TELCO_CSV))


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _quarter_figures(events: list[dict], program: str | None = None) -> dict:
    """Quarter KPIs' parts from the events alone: one subscription per customer."""
    started: dict[str, tuple[datetime, Decimal]] = {}
    cancelled: dict[str, datetime] = {}
    for event in events:
        if program is not None and event["program"] != program:
            continue
        if event["type"] == "subscription_started":
            started[event["customer_id"]] = (_t(event["occurred_at"]), Decimal(event["mrr"]))
        else:
            cancelled[event["customer_id"]] = _t(event["occurred_at"])

    def active_at(customer: str, moment: datetime) -> bool:
        start, _ = started[customer]
        end = cancelled.get(customer)
        return start < moment and (end is None or end >= moment)

    at_start = {c for c in started if active_at(c, QUARTER_START)}
    at_end = {c for c in started if cancelled.get(c) is None}
    return {
        "customers": len(started),
        "churned": sum(1 for at in cancelled.values() if QUARTER_START <= at < QUARTER_END),
        "active_at_start": len(at_start),
        "retained": len(at_start & at_end),
        "mrr_at_start": sum((started[c][1] for c in at_start), Decimal(0)),
        "mrr_at_end": sum((started[c][1] for c in at_end), Decimal(0)),
        "mrr_at_end_of_start_cohort": sum((started[c][1] for c in at_start & at_end), Decimal(0)),
    }


@pytest.mark.parametrize("contract", [None, *CONTRACTS])
def test_quarter_figures_match_pandas(events, contract):
    program = CONTRACTS.get(contract) if contract else None
    mine = _quarter_figures(events, program)
    figures = expectations.telco(contract=contract)
    assert mine == {
        "customers": figures.customers,
        "churned": figures.churned,
        "active_at_start": figures.active_at_start,
        "retained": figures.retained,
        "mrr_at_start": figures.mrr_at_start,
        "mrr_at_end": figures.mrr_at_end,
        "mrr_at_end_of_start_cohort": figures.mrr_at_end_of_start_cohort,
    }


def test_known_totals():
    # Published figures of this dataset: 7,043 customers, 1,869 of them churned.
    figures = expectations.telco()
    assert (figures.customers, figures.churned) == (7043, 1869)
    assert figures.churn_rate.value == pytest.approx(1869 / 7043)


def test_cancellations_fall_inside_the_quarter_after_their_start(events):
    starts = {e["customer_id"]: e["occurred_at"] for e in events if e["type"].endswith("started")}
    for event in events:
        if event["type"] == "subscription_cancelled":
            at = _t(event["occurred_at"])
            assert QUARTER_START <= at < QUARTER_END
            assert at > _t(starts[event["customer_id"]])


def test_tenure_zero_customers_join_inside_the_quarter(events):
    raw = expectations.pd.read_csv(expectations.TELCO_CSV)
    new_ids = set(raw.loc[raw["tenure"] == 0, "customerID"])
    assert len(new_ids) == 11  # the rows whose TotalCharges is blank
    for event in events:
        if event["type"] == "subscription_started" and event["customer_id"] in new_ids:
            assert QUARTER_START <= _t(event["occurred_at"]) < QUARTER_END


def test_start_is_tenure_months_before_the_quarter(events):
    raw = expectations.pd.read_csv(expectations.TELCO_CSV).set_index("customerID")
    for event in events:
        if event["type"] == "subscription_started":
            tenure = int(raw.loc[event["customer_id"], "tenure"])
            if tenure:
                at = _t(event["occurred_at"])
                months = (QUARTER_START.year - at.year) * 12 + QUARTER_START.month - at.month
                assert (months, at.day, at.hour) == (tenure, 1, 0)


def test_ids_order_and_money_form(events):
    assert len({e["event_id"] for e in events}) == len(events)
    times = [_t(e["occurred_at"]) for e in events]
    assert times == sorted(times)
    for event in events:
        if "mrr" in event:
            whole, cents = event["mrr"].split(".")
            assert whole.isdigit() and len(cents) == 2 and cents.isdigit()


def test_program_option_replaces_the_contract():
    events = list(telco.iter_events(expectations.TELCO_CSV, program="telco"))
    assert {e["program"] for e in events} == {"telco"}
