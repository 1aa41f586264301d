"""KPI figures computed with pandas straight from the raw dataset files.

These share no code with the adapters: each function reads the published file and applies the
mapping rules as documented in docs/datasets.md (the documented choices, such as the telco
quarter, are written here again rather than imported). The adapter tests compare the events
against them, and a worker test can compare the KPIs the worker serves after a replay against
the same figures. Money is summed exactly, as `Decimal`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED = REPO_ROOT / "data"
# The datasets that may not ship stay outside the repository (see data/NOTICE).
SHARED_DATASETS = Path(
    os.environ.get("STREAM_KPIS_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets")
)

SHOPPERS_CSV = BUNDLED / "online_shoppers_intention" / "online_shoppers_intention.csv"
TELCO_CSV = BUNDLED / "telco_customer_churn" / "WA_Fn-UseC_-Telco-Customer-Churn.csv"
KKBOX_DIR = SHARED_DATASETS / "kkbox_churn_sample"
CDNOW_TXT = SHARED_DATASETS / "cdnow" / "CDNOW_master.txt"

# The documented telco quarter (docs/datasets.md): Q1 2018, 90 days.
TELCO_QUARTER_START = pd.Timestamp("2018-01-01T00:00:00Z")
TELCO_QUARTER_END = pd.Timestamp("2018-04-01T00:00:00Z")

_CENT = Decimal("0.01")


def _decimal_sum(values: pd.Series) -> Decimal:
    return sum((Decimal(str(v).strip()) for v in values), Decimal(0))


@dataclass(frozen=True)
class Ratio:
    numerator: int | float | Decimal
    denominator: int | float | Decimal

    @property
    def value(self) -> float | None:
        return None if self.denominator == 0 else float(self.numerator) / float(self.denominator)


# --- online shoppers ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShoppersFigures:
    sessions: int
    converted_sessions: int
    total_duration_seconds: float
    sessions_per_month: dict[int, int]

    @property
    def session_conversion_rate(self) -> Ratio:
        return Ratio(self.converted_sessions, self.sessions)

    @property
    def average_session_duration_seconds(self) -> Ratio:
        return Ratio(self.total_duration_seconds, self.sessions)

    @property
    def visitor_conversion_rate(self) -> Ratio:
        # One visitor per session, and each converting session has its own purchase.
        return Ratio(self.converted_sessions, self.sessions)


def shoppers(path: Path = SHOPPERS_CSV) -> ShoppersFigures:
    frame = pd.read_csv(path)
    durations = frame[
        ["Administrative_Duration", "Informational_Duration", "ProductRelated_Duration"]
    ]
    # -1 (unmeasured) and blanks count as 0 seconds.
    per_session = durations.fillna(0).clip(lower=0).sum(axis=1)
    months = pd.to_datetime(frame["Month"].str[:3] + " 2017", format="%b %Y").dt.month
    return ShoppersFigures(
        sessions=len(frame),
        converted_sessions=int(frame["Revenue"].sum()),
        total_duration_seconds=float(per_session.sum()),
        sessions_per_month={int(m): int(n) for m, n in months.value_counts().items()},
    )


# --- telco ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelcoFigures:
    customers: int
    churned: int
    active_at_start: int
    retained: int  # active at both quarter start and end
    mrr_at_start: Decimal
    mrr_at_end: Decimal  # of every customer active at the end, new ones included
    mrr_at_end_of_start_cohort: Decimal

    @property
    def churn_rate(self) -> Ratio:
        # Every customer is active at some time in the quarter.
        return Ratio(self.churned, self.customers)

    @property
    def customer_retention_rate(self) -> Ratio:
        return Ratio(self.retained, self.active_at_start)

    @property
    def net_dollar_retention(self) -> Ratio:
        return Ratio(self.mrr_at_end_of_start_cohort, self.mrr_at_start)

    @property
    def gross_revenue_retention(self) -> Ratio:
        # No customer changes MRR, so GRR equals NDR here.
        return Ratio(self.mrr_at_end_of_start_cohort, self.mrr_at_start)


def telco(path: Path = TELCO_CSV, *, contract: str | None = None) -> TelcoFigures:
    """Figures over the quarter, for every customer or for one `Contract` value."""
    frame = pd.read_csv(path, dtype={"MonthlyCharges": str})
    if contract is not None:
        frame = frame[frame["Contract"] == contract]
    at_start = frame[frame["tenure"] > 0]
    at_end = frame[frame["Churn"] == "No"]
    retained = at_start[at_start["Churn"] == "No"]
    return TelcoFigures(
        customers=len(frame),
        churned=int((frame["Churn"] == "Yes").sum()),
        active_at_start=len(at_start),
        retained=len(retained),
        mrr_at_start=_decimal_sum(at_start["MonthlyCharges"]),
        mrr_at_end=_decimal_sum(at_end["MonthlyCharges"]),
        mrr_at_end_of_start_cohort=_decimal_sum(retained["MonthlyCharges"]),
    )


# --- KKBox ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KkboxFigures:
    customers: int  # users with at least one usable transaction: all were active at some time
    cancellations: int  # cancel rows: each ends an active subscription
    churned_customers: int  # distinct users with a cancel row
    revenue_events: int  # starts and renewals
    active_at_end: int
    mrr_at_end: Decimal
    sessions: int
    total_session_seconds: float

    @property
    def churn_rate_all(self) -> Ratio:
        return Ratio(self.churned_customers, self.customers)

    @property
    def average_session_duration_seconds(self) -> Ratio:
        return Ratio(self.total_session_seconds, self.sessions)


def _kkbox_monthly(amount: int, plan_days: int) -> Decimal:
    days = plan_days if plan_days > 0 else 30
    return (Decimal(int(amount)) * 30 / days).quantize(_CENT, rounding=ROUND_HALF_EVEN)


def kkbox(folder: Path = KKBOX_DIR) -> KkboxFigures:
    tx = pd.read_csv(folder / "transactions_sample.csv")
    tx = tx[(tx["payment_plan_days"] >= 0) & (tx["actual_amount_paid"] >= 0)]
    tx = tx.reset_index(names="row").sort_values(["msno", "transaction_date", "row"])

    # A row finds its user inactive when it is the user's first or follows a cancel row.
    previous_cancel = tx.groupby("msno")["is_cancel"].shift()
    inactive_before = previous_cancel.isna() | (previous_cancel == 1)
    # Payments: every non-cancel row; a cancel row also pays when the user was inactive.
    revenue_events = int(((tx["is_cancel"] == 0) | inactive_before).sum())

    last = tx.groupby("msno").tail(1)
    active_last = last[last["is_cancel"] == 0]
    mrr_at_end = sum(
        (
            _kkbox_monthly(a, d)
            for a, d in zip(
                active_last["actual_amount_paid"], active_last["payment_plan_days"], strict=True
            )
        ),
        Decimal(0),
    )

    logs = pd.read_csv(folder / "user_logs_sample.csv")
    logs = logs[logs["total_secs"] >= 0]
    per_day = logs.groupby(["msno", "date"])["total_secs"].sum()

    return KkboxFigures(
        customers=int(tx["msno"].nunique()),
        cancellations=int(tx["is_cancel"].sum()),
        churned_customers=int(tx.loc[tx["is_cancel"] == 1, "msno"].nunique()),
        revenue_events=revenue_events,
        active_at_end=len(active_last),
        mrr_at_end=mrr_at_end,
        sessions=len(per_day),
        total_session_seconds=float(per_day.sum()),
    )


# --- CDNOW ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CdnowFigures:
    customers: int
    repeat_customers: int  # customers with purchases on two or more days
    purchases: int  # customer-days
    total_amount: Decimal
    first_day: str  # YYYYMMDD as in the file
    last_day: str

    @property
    def repeat_customer_rate(self) -> Ratio:
        return Ratio(self.repeat_customers, self.customers)


def cdnow(path: Path = CDNOW_TXT) -> CdnowFigures:
    frame = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "dollar_value": str})
    days_per_customer = frame.groupby("customer_id")["date"].nunique()
    return CdnowFigures(
        customers=len(days_per_customer),
        repeat_customers=int((days_per_customer >= 2).sum()),
        purchases=int(frame.groupby(["customer_id", "date"]).ngroups),
        total_amount=_decimal_sum(frame["dollar_value"]),
        first_day=str(frame["date"].min()),
        last_day=str(frame["date"].max()),
    )
