"""CDNOW purchases 1997-1998 (Fader & Hardie) as `purchase` events.

The file is whitespace separated: `customer_id date number_of_cds dollar_value`, dates YYYYMMDD.
Several rows can share a customer and a day; they are one purchase occasion (as in the
buy-till-you-die literature the dataset comes from), so each customer-day becomes one
`purchase` at 00:00:00Z of that day, with `order_id` "<customer_id>-<date>" and `amount` the
sum of the day's `dollar_value` (0.00 is a legal amount). `customer_id` is kept as written, with
its leading zeros.

The contract rejects times before 2000, so every date moves YEAR_OFFSET (17) years forward:
1997-01-01 becomes 2014-01-01. 1997-98 and 2014-15 share one calendar (neither has a 29
February, and each year starts on the same weekday), so every purchase keeps its month, day and
weekday. The full mapping is in docs/datasets.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from stream_kpis.adapters._common import Event, finish, money, open_text, yyyymmdd
from stream_kpis.errors import DatasetError

logger = logging.getLogger(__name__)

NAME = "cdnow"
COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")
YEAR_OFFSET = 17


def iter_events(
    path: str | Path, *, start: datetime | None = None, program: str | None = None
) -> Iterator[Event]:
    """The dataset's events in event-time order (see the module docstring for the mapping).

    `start` moves the timeline so its first event is at `start`; `program` tags every event.
    """
    path = Path(path)
    orders: dict[tuple[str, str], tuple[int, Decimal]] = {}
    rows = 0
    for index, (customer, date, amount) in enumerate(_read_rows(path)):
        rows = index + 1
        first_index, total = orders.get((customer, date), (index, Decimal(0)))
        orders[(customer, date)] = (first_index, total + amount)

    events: list[Event] = []
    for (customer, date), (index, total) in orders.items():
        events.append(
            {
                "event_id": f"{NAME}-{index}-0",
                "type": "purchase",
                "occurred_at": _moved(yyyymmdd(date)),
                "customer_id": customer,
                "order_id": f"{customer}-{date}",
                "amount": money(total),
            }
        )

    logger.info("%s: %d purchases from %d rows of %s", NAME, len(events), rows, path)
    return finish(events, start=start, program=program)


def _read_rows(path: Path) -> Iterator[tuple[str, str, Decimal]]:
    """(customer_id, YYYYMMDD, dollar_value) per data row, checked; blank lines are skipped."""
    with open_text(path, encoding="ascii", newline=None) as handle:
        header = handle.readline().split()
        if tuple(header) != COLUMNS:
            raise DatasetError(f"{path}: header is {header}, expected {list(COLUMNS)}")
        for line_number, line in enumerate(handle, start=2):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}: line {line_number}"
            if len(fields) != len(COLUMNS):
                raise DatasetError(f"{where}: {len(fields)} fields, expected {len(COLUMNS)}")
            try:
                yyyymmdd(fields[1])
                amount = Decimal(fields[3])
            except (InvalidOperation, ValueError) as exc:
                raise DatasetError(f"{where}: {line.strip()!r} is not a purchase row") from exc
            if not amount.is_finite() or amount < 0:
                raise DatasetError(f"{where}: dollar_value {fields[3]!r} is not an amount")
            yield fields[0], fields[1], amount


def _moved(day: datetime) -> datetime:
    """The same month and day YEAR_OFFSET years later (the data has no 29 February)."""
    return day.replace(year=day.year + YEAR_OFFSET)
