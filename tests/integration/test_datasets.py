"""The four public datasets replayed through the real broker into a real worker.

Each dataset is mapped with its adapter, produced keyed by subject to a private set of topics,
and consumed by one `stream-kpis worker` on event time. The KPIs it serves on /kpis must equal
`compute` over the same events exactly, and the figures computed with pandas straight from the
raw file (tests/expectations.py, tests/dataset_expectations.py), which share no code with the
product. The windows are chosen so that each expectation is well defined from the data and
docs/datasets.md alone: the worker's clock is the newest event time, so each window's start w0
follows from the dataset's last event (KPI-SPEC section 3: w0 = floor(T / bucket) * bucket - L).

KKBox and CDNOW may not ship, so they are read from ../shared/datasets beside the repository
(tests/expectations.py): skipped when missing, but a failure under CI.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stream_kpis.adapters import get
from stream_kpis.compute import compute
from stream_kpis.configure import contract_config, engine_config, load_judge
from stream_kpis.settings import load_settings
from tests import dataset_expectations, expectations
from tests.expectations import Ratio
from tests.workers import WorkerProcess, assert_same_kpis, produce, wait_for_counts, worker_env

pytestmark = [pytest.mark.services, pytest.mark.slow]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Guards against a stalled worker, not performance bounds.
WORKER_START_TIMEOUT_SECONDS = 180
CATCH_UP_TIMEOUT_SECONDS = 400

TELCO_CONTRACTS = {
    "month-to-month": "Month-to-month",
    "one-year": "One year",
    "two-year": "Two year",
}


@dataclass(frozen=True)
class Plan:
    """How a dataset is replayed: where it is (None: the bundled copy) and the worker's windows."""

    path: Path | None
    windows: list[str]
    reporting_currency: str = "USD"


PLANS = {
    # Largest first: its worker gets its events earliest.
    "cdnow": Plan(expectations.CDNOW_TXT, ["30d"]),
    # The amounts are New Taiwan dollars.
    "kkbox": Plan(expectations.KKBOX_DIR, ["1h", "30d"], reporting_currency="TWD"),
    # The documented timeline ends on Sunday 31 December 2017, so a 30-day window in 1-day
    # buckets starts at 2017-12-01T00:00:00Z and holds December's sessions and nothing else.
    "shoppers": Plan(None, ["dec=30d/1d"]),
    # The last cancellation is on 2018-03-31, so `quarter` starts at 2017-12-31T00:00:00Z: every
    # customer who started before the quarter did so on the 1st of a month up to 2017-12-01,
    # and the quarter's joins and cancellations are after 2018-01-01T00:00:00Z, so the window
    # has the documented quarter's cohort and events.
    "telco": Plan(None, ["quarter=90d/1d"]),
}


@dataclass(frozen=True)
class Replay:
    produced: int
    served: dict[str, Any]  # the worker's /kpis once every message is accounted for
    offline: dict[str, Any]  # `compute` over the same events, with the same settings


class _Run:
    """One dataset's replay: its own topics, consumer group, Redis prefix and worker."""

    def __init__(self, dataset: str, plan: Plan, kafka: Any, redis_server: Any, log_dir: Path):
        self.dataset, self.plan, self.kafka = dataset, plan, kafka
        self.prefix = f"t{uuid.uuid4().hex[:10]}-{dataset}"
        env = worker_env(
            self.prefix,
            kafka.bootstrap_servers,
            redis_server.url,
            STREAM_KPIS_WINDOWS=",".join(plan.windows),
            STREAM_KPIS_REPORTING_CURRENCY=plan.reporting_currency,
        )
        self.worker = WorkerProcess(env, log_dir, dataset)
        self.lines: list[str] = []
        self.produced = 0
        self.offline: dict[str, Any] = {}

    def produce(self) -> None:
        self.lines = [json.dumps(event) for event in get(self.dataset).events(self.plan.path)]
        self.worker.wait_ready(timeout_seconds=WORKER_START_TIMEOUT_SECONDS)
        self.produced = produce(self.kafka.bootstrap_servers, self.prefix, self.lines)

    def compute_offline(self) -> None:
        settings = load_settings(
            windows=self.plan.windows, reporting_currency=self.plan.reporting_currency
        )
        config = engine_config(settings)
        self.offline = compute(
            [line.encode() for line in self.lines],
            config=config,
            contract=contract_config(settings),
            judge=load_judge(settings, config),
        )

    def result(self) -> Replay:
        served = wait_for_counts(self.worker, self.produced, CATCH_UP_TIMEOUT_SECONDS)
        return Replay(self.produced, served, self.offline)


@pytest.fixture(scope="module")
def replays(kafka, redis_server, tmp_path_factory) -> dict[str, Replay]:
    """Every available dataset replayed, each into its own worker (their event-time clocks
    would otherwise mix). The workers run at the same time, so the slow ones share the cores
    with the rest: start them all, produce, compute offline while they catch up, then wait."""
    log_dir = tmp_path_factory.mktemp("dataset-workers")
    runs = {
        name: _Run(name, plan, kafka, redis_server, log_dir)
        for name, plan in PLANS.items()
        if plan.path is None or plan.path.exists()
    }
    try:
        for run in runs.values():
            run.worker.start()
        for run in runs.values():
            run.produce()
        for run in runs.values():
            run.compute_offline()
        return {name: run.result() for name, run in runs.items()}
    finally:
        for run in runs.values():
            run.worker.stop()


def _replayed(replays: dict[str, Replay], dataset: str) -> Replay:
    """The dataset's replay; skipped when its file is missing, but a failure under CI."""
    if dataset not in replays:
        path = PLANS[dataset].path
        message = f"{path} is missing: the shared datasets belong beside the repository (../shared)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return replays[dataset]


def _terms(snapshot: dict[str, Any], kpi: str, window: str = "all", scope: str = "all") -> Any:
    entry = snapshot["windows"][window][scope][kpi]
    return entry["numerator"], entry["denominator"]


def assert_terms(
    snapshot: dict[str, Any], kpi: str, expected: Ratio, window: str = "all", scope: str = "all"
) -> None:
    """The KPI's numerator and denominator are the expected ones: counts and money exactly
    (money is summed exactly, so its JSON number reads back as the same decimal), durations
    to 1e-9 relative."""
    got = _terms(snapshot, kpi, window, scope)
    for side, mine, theirs in zip(
        ("numerator", "denominator"), got, (expected.numerator, expected.denominator), strict=True
    ):
        where = f"{kpi} {side} in window {window}, scope {scope}"
        if isinstance(theirs, Decimal):
            assert Decimal(str(mine)) == theirs, where
        elif isinstance(theirs, float):
            assert mine == pytest.approx(theirs, rel=1e-9), where
        else:
            assert mine == theirs, where


@pytest.fixture
def shoppers_replay(replays) -> Replay:
    return _replayed(replays, "shoppers")


@pytest.fixture
def telco_replay(replays) -> Replay:
    return _replayed(replays, "telco")


@pytest.fixture
def kkbox_replay(replays) -> Replay:
    return _replayed(replays, "kkbox")


@pytest.fixture
def cdnow_replay(replays) -> Replay:
    return _replayed(replays, "cdnow")


# --- the worker equals `compute` ------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["shoppers", "telco", "kkbox", "cdnow"])
def test_worker_equals_compute(dataset, request):
    replay: Replay = request.getfixturevalue(f"{dataset}_replay")

    assert_same_kpis(replay.served, replay.offline)
    events = replay.served["events"]
    assert events["accepted"] == replay.produced
    assert events["invalid"] == {}
    assert events["duplicate"] == 0
    assert events["no_effect"] == replay.offline["events"]["no_effect"] == 0


# --- the worker equals pandas over the raw files --------------------------------------------


def test_shoppers_conversion_and_duration(shoppers_replay):
    served = shoppers_replay.served
    year = expectations.shoppers()
    december = dataset_expectations.shoppers_month("Dec")
    assert served["as_of"].startswith("2017-12-31T")
    assert year.sessions == 12_330 and december.sessions > 0

    for window, figures in (("all", year), ("dec", december)):
        for kpi in (
            "session_conversion_rate",
            "visitor_conversion_rate",
            "average_session_duration_seconds",
        ):
            assert_terms(served, kpi, getattr(figures, kpi), window=window)


@pytest.mark.parametrize("scope", ["all", *TELCO_CONTRACTS])
def test_telco_quarter_churn_and_mrr(telco_replay, scope):
    served = telco_replay.served
    figures = expectations.telco(contract=TELCO_CONTRACTS.get(scope))
    assert served["as_of"].startswith("2018-03-31T")

    for kpi in (
        "churn_rate",
        "customer_retention_rate",
        "net_dollar_retention",
        "gross_revenue_retention",
    ):
        assert_terms(served, kpi, getattr(figures, kpi), window="quarter", scope=scope)
    # Every customer is active at some time in the quarter, so `all` churns the same.
    assert_terms(served, "churn_rate", figures.churn_rate, window="all", scope=scope)


def test_kkbox_cancellations_and_revenue_over_all_time(kkbox_replay):
    served = kkbox_replay.served
    figures = dataset_expectations.kkbox_window(None)
    published = expectations.kkbox()
    # The last listening day, 2017-03-31, counts at its end.
    assert served["as_of"] == "2017-03-31T23:59:59Z"
    assert figures.cancel_rows == figures.churned_customers == published.cancellations

    assert_terms(served, "churn_rate", figures.churn_rate)
    assert_terms(served, "repeat_customer_rate", figures.repeat_customer_rate)
    assert_terms(
        served, "average_session_duration_seconds", figures.average_session_duration_seconds
    )
    assert figures.buyers == published.customers


def test_kkbox_mrr_at_the_end(kkbox_replay):
    # `1h` starts at 2017-03-31T22:00:00Z, after the last transaction day (00:00:00Z): its
    # starting cohort is every member active at the end, with their MRR.
    served = kkbox_replay.served
    figures = dataset_expectations.kkbox_window(pd.Timestamp("2017-03-31T22:00:00Z"))
    published = expectations.kkbox()
    assert figures.customers_active_at_start == published.active_at_end
    assert figures.mrr_at_start == published.mrr_at_end

    assert_terms(served, "customer_retention_rate", figures.customer_retention_rate, "1h")
    assert_terms(served, "net_dollar_retention", figures.net_dollar_retention, "1h")
    assert_terms(served, "churn_rate", figures.churn_rate, "1h")


def test_kkbox_march(kkbox_replay):
    # `30d` (1-hour buckets) starts at 2017-03-01T23:00:00Z: transactions of 1 March are
    # before it, the listening of 1 March (at 23:59:59Z) is in it.
    served = kkbox_replay.served
    figures = dataset_expectations.kkbox_window(pd.Timestamp("2017-03-01T23:00:00Z"))
    assert figures.cancel_rows > 0 and figures.customers_active_at_start > 0

    for kpi in (
        "churn_rate",
        "customer_retention_rate",
        "net_dollar_retention",
        "gross_revenue_retention",
        "repeat_customer_rate",
        "average_session_duration_seconds",
    ):
        assert_terms(served, kpi, getattr(figures, kpi), window="30d")


def test_cdnow_repeat_customers(cdnow_replay):
    served = cdnow_replay.served
    published = expectations.cdnow()
    # 30 June 1998 moved 17 years; `30d` then starts at 00:00:00Z on 31 May, which is in it.
    assert served["as_of"] == "2015-06-30T00:00:00Z"

    overall = dataset_expectations.cdnow_window(None)
    assert (overall.buyers, overall.repeat_buyers) == (
        published.customers,
        published.repeat_customers,
    )
    assert_terms(served, "repeat_customer_rate", published.repeat_customer_rate)
    last_month = dataset_expectations.cdnow_window("19980531")
    assert_terms(served, "repeat_customer_rate", last_month.repeat_customer_rate, "30d")
