"""The CDNOW mapping against pandas figures over the raw file (read from the shared folder)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from stream_kpis.adapters import cdnow
from stream_kpis.errors import DatasetError
from tests import expectations

pytestmark = pytest.mark.skipif(
    not expectations.CDNOW_TXT.is_file(), reason=f"CDNOW not at {expectations.CDNOW_TXT}"
)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(cdnow.iter_events(expectations.CDNOW_TXT))


@pytest.fixture(scope="module")
def figures() -> expectations.CdnowFigures:
    return expectations.cdnow()


def test_repeat_customers_match_pandas(events, figures):
    orders: dict[str, set[str]] = defaultdict(set)
    for event in events:
        orders[event["customer_id"]].add(event["order_id"])
    assert len(orders) == figures.customers == 23_570
    repeat = sum(1 for ids in orders.values() if len(ids) >= 2)
    assert repeat == figures.repeat_customers
    assert repeat / len(orders) == pytest.approx(figures.repeat_customer_rate.value)


def test_one_purchase_per_customer_day_with_every_dollar(events, figures):
    assert len(events) == figures.purchases
    assert len({e["order_id"] for e in events}) == len(events)
    assert sum((Decimal(e["amount"]) for e in events), Decimal(0)) == figures.total_amount
    assert any(e["amount"] == "0.00" for e in events)


def _documented_time(yyyymmdd: str) -> str:
    # The documented move: 17 years forward, same month, day and weekday.
    return f"{int(yyyymmdd[:4]) + 17}-{yyyymmdd[4:6]}-{yyyymmdd[6:]}T00:00:00Z"


def test_timeline_is_the_data_s_17_years_later(events, figures):
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)
    assert times[0] == _documented_time(figures.first_day) == "2014-01-01T00:00:00Z"
    assert times[-1] == _documented_time(figures.last_day)


def test_dates_keep_their_weekday(events):
    raw = expectations.pd.read_csv(expectations.CDNOW_TXT, sep=r"\s+", dtype=str)
    original = {
        f"{c}-{d}": expectations.pd.Timestamp(d).day_name()
        for c, d in zip(raw["customer_id"], raw["date"], strict=True)
    }
    for event in events:
        moved = expectations.pd.Timestamp(event["occurred_at"]).day_name()
        assert moved == original[event["order_id"]]


def test_customer_ids_keep_their_zeros(events):
    assert events[0]["customer_id"] == "00001"


def test_a_malformed_row_names_its_line(tmp_path):
    bad = tmp_path / "cdnow.txt"
    bad.write_text(
        " customer_id  date number_of_cds  dollar_value\n 00001 19970101 1 11.77\n 2 x\n"
    )
    with pytest.raises(DatasetError, match="line 3"):
        list(cdnow.iter_events(bad))
