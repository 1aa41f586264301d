"""Windowed KPI figures computed with pandas straight from the raw dataset files.

tests/expectations.py gives dataset-wide figures; this module adds the figures of one window
[w0, T] (KPI-SPEC section 3: "at t0" is after every event before w0, "in W" is a time in
[w0, T]), for the worker replay tests. Like tests/expectations.py, it shares no code with the
adapters or the engine: it reads the published files and re-applies the mapping rules as
documented in docs/datasets.md (dates at 00:00:00Z, a KKBox listening day at 23:59:59Z, CDNOW
17 years later, the KKBox transaction rules) and the KPI definitions of KPI-SPEC section 4.
Every window here ends after the dataset's last event, so "at t1" is the end of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pandas as pd

from tests.expectations import CDNOW_TXT, KKBOX_DIR, SHOPPERS_CSV, Ratio

_CENT = Decimal("0.01")
_DURATION_COLUMNS = ["Administrative_Duration", "Informational_Duration", "ProductRelated_Duration"]


# --- online shoppers: one month -----------------------------------------------------------------


@dataclass(frozen=True)
class SessionFigures:
    sessions: int
    converted_sessions: int
    total_duration_seconds: float

    @property
    def session_conversion_rate(self) -> Ratio:
        return Ratio(self.converted_sessions, self.sessions)

    @property
    def average_session_duration_seconds(self) -> Ratio:
        return Ratio(self.total_duration_seconds, self.sessions)

    @property
    def visitor_conversion_rate(self) -> Ratio:
        # One visitor per row, none a customer before its session; a converting session's
        # purchase is at the session's end, so inside the same window.
        return Ratio(self.converted_sessions, self.sessions)


def shoppers_month(month: str, path: Path = SHOPPERS_CSV) -> SessionFigures:
    """The sessions of one `Month` label (`"Dec"`): each ends inside its month."""
    frame = pd.read_csv(path)
    rows = frame[frame["Month"] == month]
    # -1 (unmeasured) and blank durations count as 0 seconds.
    seconds = rows[_DURATION_COLUMNS].fillna(0).clip(lower=0).sum(axis=1)
    return SessionFigures(
        sessions=len(rows),
        converted_sessions=int(rows["Revenue"].sum()),
        total_duration_seconds=float(seconds.sum()),
    )


# --- KKBox: one window ------------------------------------------------------------------------


@dataclass(frozen=True)
class KkboxWindowFigures:
    churned_customers: int  # distinct users with a cancel row in W
    cancel_rows: int  # cancel rows in W (each ends an active membership)
    customers_active_in_window: int
    customers_active_at_start: int
    customers_retained: int
    mrr_at_start: Decimal
    mrr_at_end_of_start_cohort: Decimal
    mrr_retained: Decimal
    revenue_events: int
    buyers: int  # users with a revenue event in W
    repeat_buyers: int  # users with two or more in W
    sessions: int
    session_seconds: float

    @property
    def churn_rate(self) -> Ratio:
        return Ratio(self.churned_customers, self.customers_active_in_window)

    @property
    def customer_retention_rate(self) -> Ratio:
        return Ratio(self.customers_retained, self.customers_active_at_start)

    @property
    def net_dollar_retention(self) -> Ratio:
        return Ratio(self.mrr_at_end_of_start_cohort, self.mrr_at_start)

    @property
    def gross_revenue_retention(self) -> Ratio:
        return Ratio(self.mrr_retained, self.mrr_at_start)

    @property
    def repeat_customer_rate(self) -> Ratio:
        return Ratio(self.repeat_buyers, self.buyers)

    @property
    def average_session_duration_seconds(self) -> Ratio:
        return Ratio(self.session_seconds, self.sessions)


def _monthly(amount: int, plan_days: int) -> Decimal:
    """What was paid, per 30 days, to the cent (half to even); a 0-day plan is a 30-day one."""
    days = 30 if plan_days == 0 else plan_days
    return (Decimal(int(amount)) * 30 / days).quantize(_CENT, rounding=ROUND_HALF_EVEN)


def kkbox_window(w0: pd.Timestamp | None, folder: Path = KKBOX_DIR) -> KkboxWindowFigures:
    """Figures of the window [w0, end of data]; `w0` None is the `all` window.

    After any transaction row a user is active exactly when the row is not a cancel row, at
    the MRR of that row's payment: a non-cancel row starts or renews, and a cancel row ends the
    membership (first starting it when the user was not active). So the state at a time is the
    state after the user's last row before it.
    """
    tx = pd.read_csv(folder / "transactions_sample.csv")
    tx = tx[(tx["payment_plan_days"] >= 0) & (tx["actual_amount_paid"] >= 0)]
    tx = tx.reset_index(names="row")
    tx["at"] = pd.to_datetime(tx["transaction_date"].astype(str), format="%Y%m%d", utc=True)
    tx = tx.sort_values(["msno", "at", "row"], kind="stable")
    tx["active_after"] = tx["is_cancel"] == 0
    tx["mrr"] = [
        _monthly(a, d)
        for a, d in zip(tx["actual_amount_paid"], tx["payment_plan_days"], strict=True)
    ]
    previous_cancel = tx.groupby("msno")["is_cancel"].shift()
    active_before_row = previous_cancel.notna() & (previous_cancel == 0)
    tx["revenue_event"] = (tx["is_cancel"] == 0) | ~active_before_row

    before = tx.iloc[0:0] if w0 is None else tx[tx["at"] < w0]
    inside = tx if w0 is None else tx[tx["at"] >= w0]

    at_start = before.groupby("msno").tail(1).set_index("msno")
    at_start = at_start[at_start["active_after"]]
    at_end = tx.groupby("msno").tail(1).set_index("msno")
    at_end = at_end[at_end["active_after"]]
    retained = at_start.index.intersection(at_end.index)

    cancels = inside[inside["is_cancel"] == 1]
    revenue_per_user = inside[inside["revenue_event"]].groupby("msno").size()

    logs = pd.read_csv(folder / "user_logs_sample.csv")
    logs = logs[logs["total_secs"] >= 0]
    logs["ends"] = pd.to_datetime(
        logs["date"].astype(str), format="%Y%m%d", utc=True
    ) + pd.Timedelta(hours=23, minutes=59, seconds=59)
    if w0 is not None:
        logs = logs[logs["ends"] >= w0]
    per_day = logs.groupby(["msno", "date"])["total_secs"].sum()

    return KkboxWindowFigures(
        churned_customers=int(cancels["msno"].nunique()),
        cancel_rows=len(cancels),
        customers_active_in_window=len(set(at_start.index) | set(inside["msno"])),
        customers_active_at_start=len(at_start),
        customers_retained=len(retained),
        mrr_at_start=sum(at_start["mrr"], Decimal(0)),
        mrr_at_end_of_start_cohort=sum(at_end.loc[retained, "mrr"], Decimal(0)),
        mrr_retained=sum(
            (min(at_start.at[user, "mrr"], at_end.at[user, "mrr"]) for user in retained),
            Decimal(0),
        ),
        revenue_events=int(revenue_per_user.sum()),
        buyers=len(revenue_per_user),
        repeat_buyers=int((revenue_per_user >= 2).sum()),
        sessions=len(per_day),
        session_seconds=float(per_day.sum()),
    )


# --- CDNOW: one window ------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseFigures:
    buyers: int  # customers with a purchase day in W
    repeat_buyers: int  # customers with two or more purchase days in W

    @property
    def repeat_customer_rate(self) -> Ratio:
        return Ratio(self.repeat_buyers, self.buyers)


def cdnow_window(first_day: str | None, path: Path = CDNOW_TXT) -> PurchaseFigures:
    """Buyers from `first_day` (YYYYMMDD as in the file, inclusive) to the end; None: all.

    One purchase per customer-day, so a customer's revenue events are their distinct days.
    """
    frame = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    if first_day is not None:
        frame = frame[frame["date"] >= first_day]
    days = frame.groupby("customer_id")["date"].nunique()
    return PurchaseFigures(buyers=len(days), repeat_buyers=int((days >= 2).sum()))
