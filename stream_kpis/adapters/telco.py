"""IBM's telco customer base as `subscription_started` / `subscription_cancelled` events.

The data describes one quarter, placed at [QUARTER_START, QUARTER_END): Q1 2018, 90 days, so a
`90d` window as of QUARTER_END covers exactly the quarter. Each customer has one subscription:
- started `tenure` calendar months before QUARTER_START (a customer with tenure 0 joined during
  the quarter: those rows are spread evenly over it, in file order), with `mrr` =
  `MonthlyCharges` and `plan` and `program` = the `Contract` ("month-to-month", "one-year",
  "two-year");
- cancelled inside the quarter when `Churn` is Yes: the churned rows are spread evenly over the
  quarter, in file order (always after the start).
`TotalCharges` is not used (it is a single space on the 11 tenure-0 rows). The full mapping is
in docs/datasets.md.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from stream_kpis.adapters._common import Event, finish, money, open_text, require_columns, utc
from stream_kpis.errors import DatasetError

logger = logging.getLogger(__name__)

NAME = "telco"
QUARTER_START = utc(2018, 1, 1)
QUARTER_END = utc(2018, 4, 1)
COLUMNS = ("customerID", "tenure", "MonthlyCharges", "Contract", "Churn")


def iter_events(
    path: str | Path, *, start: datetime | None = None, program: str | None = None
) -> Iterator[Event]:
    """The dataset's events in event-time order (see the module docstring for the mapping).

    `start` moves the timeline so its first event is at `start`; `program` replaces the
    contract as every event's programme.
    """
    rows = list(_read_rows(Path(path)))
    joined = [index for index, row in enumerate(rows) if _tenure(row, index) == 0]
    churned = [index for index, row in enumerate(rows) if _churned(row, index)]
    join_at = dict(zip(joined, _spread(len(joined)), strict=True))
    cancel_at = dict(zip(churned, _spread(len(churned)), strict=True))

    events: list[Event] = []
    for index, row in enumerate(rows):
        started_at = join_at.get(index) or _months_before(QUARTER_START, _tenure(row, index))
        events.append(_started(index, row, started_at))
        if index in cancel_at:
            cancelled_at = cancel_at[index]
            if cancelled_at <= started_at:
                cancelled_at = started_at + (QUARTER_END - started_at) / 2
            events.append(_cancelled(index, row, cancelled_at))

    logger.info("%s: %d customers, %d churned, from %s", NAME, len(rows), len(churned), path)
    return finish(events, start=start, program=program)


def contract_slug(contract: str) -> str:
    """`Month-to-month` -> `month-to-month`, `One year` -> `one-year`."""
    return "-".join(contract.strip().lower().split())


def _read_rows(path: Path) -> Iterator[dict[str, str]]:
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        require_columns(path, reader.fieldnames or [], COLUMNS)
        yield from reader


def _started(index: int, row: dict[str, str], started_at: datetime) -> Event:
    contract = contract_slug(row["Contract"])
    try:
        mrr = money(row["MonthlyCharges"].strip())
    except (ArithmeticError, ValueError) as exc:
        raise DatasetError(f"row {index}: MonthlyCharges is {row['MonthlyCharges']!r}") from exc
    return {
        "event_id": f"{NAME}-{index}-0",
        "type": "subscription_started",
        "occurred_at": started_at,
        "customer_id": row["customerID"].strip(),
        "program": contract,
        "plan": contract,
        "mrr": mrr,
    }


def _cancelled(index: int, row: dict[str, str], cancelled_at: datetime) -> Event:
    return {
        "event_id": f"{NAME}-{index}-1",
        "type": "subscription_cancelled",
        "occurred_at": cancelled_at,
        "customer_id": row["customerID"].strip(),
        "program": contract_slug(row["Contract"]),
    }


def _spread(count: int) -> list[datetime]:
    """`count` whole-second times spread evenly over the quarter: the centres of equal slices."""
    span_seconds = int((QUARTER_END - QUARTER_START).total_seconds())
    return [
        QUARTER_START + timedelta(seconds=(2 * rank + 1) * span_seconds // (2 * count))
        for rank in range(count)
    ]


def _months_before(moment: datetime, months: int) -> datetime:
    years, month_index = divmod(moment.month - 1 - months, 12)
    return moment.replace(year=moment.year + years, month=month_index + 1)


def _tenure(row: dict[str, str], index: int) -> int:
    try:
        tenure = int(row["tenure"].strip())
    except ValueError as exc:
        raise DatasetError(f"row {index}: tenure is {row['tenure']!r}") from exc
    if tenure < 0:
        raise DatasetError(f"row {index}: negative tenure {tenure}")
    return tenure


def _churned(row: dict[str, str], index: int) -> bool:
    value = row["Churn"].strip()
    if value not in ("Yes", "No"):
        raise DatasetError(f"row {index}: Churn is {value!r}, expected Yes or No")
    return value == "Yes"
