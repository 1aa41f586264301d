"""UCI "Online Shoppers Purchasing Intention" sessions as `session` (and `purchase`) events.

One row is one web session with no date and no visitor id, only a `Month` and a `Weekend` flag.
Each row becomes one `session` of its own visitor, placed in LAYOUT_YEAR: the rows of one month
that share a `Weekend` value are spread evenly, in file order, over that month's weekend days
(Saturday, Sunday) or weekdays. The session's time is its end.

`duration_seconds` is the sum of the three `*_Duration` columns. A value of -1 (33 single-page
bounce sessions: the time on a last page is never measured) or a blank (14 rows with no page
data at all) counts as 0 seconds, so every row stays a session. `converted` is `Revenue`.
A converting session also emits a `purchase` at the same time, by the same subject, so that
visitor conversion has revenue events; the data has no order value, so its amount is 0.00.
The full mapping is in docs/datasets.md.
"""

from __future__ import annotations

import calendar
import csv
import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from stream_kpis.adapters._common import Event, finish, open_text, require_columns, utc
from stream_kpis.errors import DatasetError

logger = logging.getLogger(__name__)

NAME = "shoppers"
LAYOUT_YEAR = 2017
DURATION_COLUMNS = ("Administrative_Duration", "Informational_Duration", "ProductRelated_Duration")

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name} | {
    name.lower(): number for number, name in enumerate(calendar.month_name) if name
}
_DAY_SECONDS = 86_400


def iter_events(
    path: str | Path,
    *,
    start: datetime | None = None,
    program: str | None = None,
    purchases: bool = True,
) -> Iterator[Event]:
    """The dataset's events in event-time order (see the module docstring for the mapping).

    `start` moves the timeline so its first event is at `start`; `program` tags every event;
    `purchases=False` leaves out the `purchase` events of converting sessions.
    """
    rows = list(_read_rows(Path(path)))
    placed = _layout(rows)

    events: list[Event] = []
    for row_index, row in enumerate(rows):
        events.extend(_row_events(row_index, row, placed[row_index], purchases=purchases))

    logger.info("%s: %d sessions from %s", NAME, len(rows), path)
    return finish(events, start=start, program=program)


def session_duration_seconds(row: dict[str, str]) -> float:
    """Sum of the three duration columns, with -1 (unmeasured) and blanks counted as 0."""
    total = 0.0
    for column in DURATION_COLUMNS:
        text = (row.get(column) or "").strip()
        if not text:
            continue
        value = float(text)
        if value > 0:
            total += value
    return total


def _read_rows(path: Path) -> Iterator[dict[str, str]]:
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        needed = (*DURATION_COLUMNS, "Month", "Weekend", "Revenue")
        require_columns(path, reader.fieldnames or [], needed)
        yield from reader


def _layout(rows: list[dict[str, str]]) -> list[datetime]:
    """Each row's session end: spread evenly over its month's weekend days or weekdays."""
    groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for row_index, row in enumerate(rows):
        month = _MONTHS.get(row["Month"].strip().lower())
        if month is None:
            raise DatasetError(f"row {row_index}: unknown Month {row['Month']!r}")
        groups[(month, _flag(row["Weekend"], "Weekend", row_index))].append(row_index)

    placed: list[datetime] = [utc(LAYOUT_YEAR, 1, 1)] * len(rows)
    for (month, weekend), members in groups.items():
        days = _days_of(month, weekend=weekend)
        span_seconds = len(days) * _DAY_SECONDS
        for rank, row_index in enumerate(members):
            # The centre of the rank-th of len(members) equal slices of the group's days.
            offset = int((2 * rank + 1) * span_seconds // (2 * len(members)))
            day, second = divmod(offset, _DAY_SECONDS)
            placed[row_index] = days[day] + timedelta(seconds=second)
    return placed


def _days_of(month: int, *, weekend: bool) -> list[datetime]:
    _, length = calendar.monthrange(LAYOUT_YEAR, month)
    days = [utc(LAYOUT_YEAR, month, day) for day in range(1, length + 1)]
    return [day for day in days if (day.weekday() >= 5) == weekend]


def _row_events(
    row_index: int, row: dict[str, str], ended_at: datetime, *, purchases: bool
) -> list[Event]:
    subject = f"shopper-{row_index}"
    converted = _flag(row["Revenue"], "Revenue", row_index)
    try:
        duration_seconds = session_duration_seconds(row)
    except ValueError as exc:
        raise DatasetError(f"row {row_index}: a duration is not a number ({exc})") from exc
    session: dict[str, Any] = {
        "event_id": f"{NAME}-{row_index}-0",
        "type": "session",
        "occurred_at": ended_at,
        "visitor_id": subject,
        "session_id": f"{NAME}-{row_index}",
        "duration_seconds": duration_seconds,
        "converted": converted,
    }
    events = [session]
    if converted and purchases:
        events.append(
            {
                "event_id": f"{NAME}-{row_index}-1",
                "type": "purchase",
                "occurred_at": ended_at,
                "customer_id": subject,
                "order_id": f"{NAME}-{row_index}",
                "amount": "0.00",
            }
        )
    return events


def _flag(text: str, column: str, row_index: int) -> bool:
    value = text.strip().upper()
    if value not in ("TRUE", "FALSE"):
        raise DatasetError(f"row {row_index}: {column} is {text!r}, expected TRUE or FALSE")
    return value == "TRUE"
