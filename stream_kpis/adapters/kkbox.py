"""KKBox music-subscription transactions and daily listening logs as events.

`path` is the dataset folder (holding `transactions_sample.csv` or `transactions.csv`, and
optionally `user_logs_sample.csv` or `user_logs.csv`) or a transactions file alone. The user
(`msno`) is the `customer_id`. Dates carry no time of day: a transaction is placed at 00:00:00Z
of its `transaction_date`, a user-day of listening at 23:59:59Z of its `date` (a session counts
at its end).

Transactions are applied per user in date order (file order within a day):
- `is_cancel` 0: `subscription_started` when the user has no active subscription, else
  `subscription_renewed`; `mrr` is the monthly equivalent of `actual_amount_paid` (NTD):
  amount x 30 / `payment_plan_days`, to the cent; a 0-day plan counts as a 30-day one.
- `is_cancel` 1: `subscription_cancelled` on the transaction date. When the sample holds no
  earlier transaction that made the user active, the row also stands for the membership it
  cancels: a `subscription_started` at the same time comes first, so the cancellation counts.
`membership_expire_date` is not used (in this sample it lies up to five years after 30-day
plans); a membership that lapses without a cancel row stays active. Events carry no `currency`:
replay KKBox with the reporting currency set to TWD, or read its money KPIs as NTD.

User logs: one `session` per user-day, `duration_seconds` = `total_secs` (rows of the same
user-day are summed; negative or non-finite totals are skipped with a warning).
The full mapping is in docs/datasets.md.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from stream_kpis.adapters._common import Event, finish, money, open_text, require_columns, yyyymmdd
from stream_kpis.errors import DatasetError

logger = logging.getLogger(__name__)

NAME = "kkbox"
TRANSACTION_FILES = ("transactions_sample.csv", "transactions.csv")
USER_LOG_FILES = ("user_logs_sample.csv", "user_logs.csv")
TRANSACTION_COLUMNS = (
    "msno",
    "payment_plan_days",
    "actual_amount_paid",
    "transaction_date",
    "is_cancel",
)
USER_LOG_COLUMNS = ("msno", "date", "total_secs")
DAYS_PER_MONTH = 30
_END_OF_DAY = timedelta(hours=23, minutes=59, seconds=59)


def iter_events(
    path: str | Path, *, start: datetime | None = None, program: str | None = None
) -> Iterator[Event]:
    """The dataset's events in event-time order (see the module docstring for the mapping).

    `start` moves the timeline so its first event is at `start`; `program` tags every event.
    """
    transactions_path, user_logs_path = _locate(Path(path))
    events = _transaction_events(transactions_path)
    if user_logs_path is not None:
        events.extend(_session_events(user_logs_path))
    return finish(events, start=start, program=program)


def monthly_mrr(amount_paid: str | int, plan_days: str | int) -> str:
    """The monthly equivalent of a payment for a plan of `plan_days` (0 counts as 30)."""
    days = int(plan_days) or DAYS_PER_MONTH
    return money(Decimal(str(amount_paid)) * DAYS_PER_MONTH / days)


def _locate(path: Path) -> tuple[Path, Path | None]:
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder")

    transactions = next((path / n for n in TRANSACTION_FILES if (path / n).is_file()), None)
    if transactions is None:
        raise DatasetError(f"{path}: holds none of {', '.join(TRANSACTION_FILES)}")
    user_logs = next((path / n for n in USER_LOG_FILES if (path / n).is_file()), None)
    return transactions, user_logs


def _read(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        require_columns(path, reader.fieldnames or [], columns)
        return list(reader)


def _transaction_events(path: Path) -> list[Event]:
    rows = _read(path, TRANSACTION_COLUMNS)
    by_user: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for index, row in enumerate(rows):
        by_user[row["msno"]].append((_date(row["transaction_date"], path, index), index))

    events: list[Event] = []
    skipped = 0
    for user, history in by_user.items():
        active = False
        for day, index in sorted(history):  # date, then file order
            row = rows[index]
            if not _usable_transaction(row):
                skipped += 1
                continue
            row_events, active = _apply_transaction(user, day, index, row, active=active)
            events.extend(row_events)

    if skipped:
        logger.warning("%s: skipped %d transactions with a negative amount or plan", path, skipped)
    logger.info("%s: %d events from %d transactions", path, len(events), len(rows))
    return events


def _apply_transaction(
    user: str, day: datetime, index: int, row: dict[str, str], *, active: bool
) -> tuple[list[Event], bool]:
    """The events of one transaction, and whether the user is active after it."""
    base: dict[str, Any] = {"occurred_at": day, "customer_id": user}
    payment: Event = {
        "event_id": f"{NAME}-tx-{index}-0",
        "type": "subscription_renewed" if active else "subscription_started",
        **base,
        "plan": f"{int(row['payment_plan_days'])}-day",
        "mrr": monthly_mrr(row["actual_amount_paid"], row["payment_plan_days"]),
    }
    if row["is_cancel"].strip() != "1":
        return [payment], True

    cancel: Event = {"event_id": f"{NAME}-tx-{index}-1", "type": "subscription_cancelled", **base}
    if active:
        return [cancel], False
    return [payment, cancel], False


def _usable_transaction(row: dict[str, str]) -> bool:
    try:
        return int(row["payment_plan_days"]) >= 0 and Decimal(row["actual_amount_paid"]) >= 0
    except (ArithmeticError, ValueError):
        return False


def _session_events(path: Path) -> list[Event]:
    rows = _read(path, USER_LOG_COLUMNS)
    days: dict[tuple[str, str], tuple[int, float]] = {}
    skipped = 0
    for index, row in enumerate(rows):
        try:
            seconds = float(row["total_secs"])
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            skipped += 1
            continue
        key = (row["msno"], row["date"].strip())
        first_index, total = days.get(key, (index, 0.0))
        days[key] = (first_index, total + seconds)

    if skipped:
        logger.warning("%s: skipped %d user-days with a bad total_secs", path, skipped)

    events: list[Event] = []
    for (user, date), (index, seconds) in days.items():
        events.append(
            {
                "event_id": f"{NAME}-log-{index}-0",
                "type": "session",
                "occurred_at": _date(date, path, index) + _END_OF_DAY,
                "customer_id": user,
                "session_id": date,
                "duration_seconds": seconds,
            }
        )
    logger.info("%s: %d listening sessions", path, len(events))
    return events


def _date(text: str, path: Path, index: int) -> datetime:
    try:
        return yyyymmdd(text)
    except ValueError as exc:
        raise DatasetError(f"{path}: row {index}: {exc}") from exc
