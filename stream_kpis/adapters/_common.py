"""Helpers shared by the dataset adapters: event times, money strings, ordering and shifting.

Adapters build events whose time fields (`occurred_at`, `started_at`, `ended_at`) hold aware
UTC `datetime` values, then hand them to `finish`, which orders them by event time, applies an
optional shift and turns the times into RFC 3339 strings with `Z`. `shift_events` and `retime`
move an already finished stream (strings or epoch numbers) by one constant offset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import IO, Any

from stream_kpis.errors import DatasetError, TimestampError
from stream_kpis.timefmt import EPOCH_MS_THRESHOLD, format_utc, parse_timestamp

logger = logging.getLogger(__name__)

TIME_FIELDS = ("occurred_at", "started_at", "ended_at")

_CENT = Decimal("0.01")

Event = dict[str, Any]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def yyyymmdd(text: str) -> datetime:
    """00:00:00Z of a date written YYYYMMDD; ValueError when it is not one."""
    value = text.strip()
    if len(value) != 8 or not value.isascii() or not value.isdigit():
        raise ValueError(f"{text!r} is not a YYYYMMDD date")
    return utc(int(value[:4]), int(value[4:6]), int(value[6:8]))


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as everywhere in stream-kpis (`timefmt.format_utc`)."""
    return format_utc(as_utc(moment).timestamp())


def parse_time(value: object) -> datetime:
    """An RFC 3339 string, or epoch seconds or milliseconds, as an aware UTC datetime.

    Raises `TimestampError` (a ValueError) when the value is not a contract timestamp.
    """
    seconds = parse_timestamp(value)
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise TimestampError(f"time out of the years 1-9999: {seconds!r}") from None


def money(value: Decimal | str | float) -> str:
    """A non-negative amount as a plain decimal string with two places, e.g. "49.90"."""
    amount = Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_EVEN)
    if amount < 0:
        raise ValueError(f"negative amount: {value!r}")
    return format(amount, "f")


def event_time(event: Event) -> datetime:
    """The time an event counts at: a `session`'s end, else `occurred_at`."""
    if event.get("type") == "session" and event.get("ended_at") is not None:
        return _as_datetime(event["ended_at"])
    return _as_datetime(event["occurred_at"])


def finish(
    events: Iterable[Event], *, start: datetime | None = None, program: str | None = None
) -> Iterator[Event]:
    """Order built events by event time (ties keep build order), shift, and format the times.

    `start`, when given, moves the whole timeline by one constant so its earliest event is at
    `start`. `program`, when given, is set on every event.
    """
    ordered = sorted(events, key=event_time)  # sorted() is stable: ties keep build order
    offset = timedelta(0)
    if start is not None and ordered:
        offset = as_utc(start) - event_time(ordered[0])

    for event in ordered:
        if program is not None:
            event["program"] = program
        for field in TIME_FIELDS:
            value = event.get(field)
            if isinstance(value, datetime):
                event[field] = format_time(value + offset)
        yield event


def shift_events(events: Iterable[Event], offset: timedelta) -> Iterator[Event]:
    """Copies of `events` with every time field moved by `offset`.

    A time keeps its form: an RFC 3339 string stays a string (in UTC with `Z`), epoch seconds
    stay seconds and epoch milliseconds stay milliseconds. A value that is not a timestamp is
    left as it is, so an invalid event stays invalid for the same reason.
    """
    for event in events:
        moved = dict(event)
        for field in TIME_FIELDS:
            if field in moved and moved[field] is not None:
                moved[field] = _shift_value(moved[field], offset)
        yield moved


def retime(events: Iterable[Event], end: datetime) -> list[Event]:
    """Shift `events` by one constant so that the latest event time is `end`.

    Events whose time cannot be read are kept unchanged and do not take part in finding the
    latest time.
    """
    materialised = list(events)
    times = readable_times(materialised)
    if not times:
        return materialised
    return list(shift_events(materialised, as_utc(end) - max(times)))


def readable_times(events: Iterable[Event]) -> list[datetime]:
    """The event times of the events whose time can be read, in their order."""
    times = []
    for event in events:
        try:
            times.append(event_time(event))
        except (KeyError, TypeError, ValueError):
            continue
    return times


def _shift_value(value: object, offset: timedelta) -> object:
    try:
        moment = parse_time(value)
    except ValueError:  # TimestampError: not a timestamp, left as it is
        return value
    try:
        moved = moment + offset
    except OverflowError:
        return value
    if isinstance(value, str):
        return format_time(moved)
    seconds = moved.timestamp()
    assert isinstance(value, int | float)
    if value > EPOCH_MS_THRESHOLD:
        return round(seconds * 1000) if isinstance(value, int) else seconds * 1000
    return round(seconds) if isinstance(value, int) else seconds


def _as_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    return parse_time(value)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def open_text(path: Path, *, encoding: str = "utf-8", newline: str | None = "") -> IO[str]:
    """`path` opened for reading text; DatasetError naming the file when that fails."""
    try:
        return path.open(encoding=encoding, newline=newline)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open ({exc.strerror or exc})") from exc


def require_columns(path: object, header: Iterable[str], needed: Iterable[str]) -> None:
    """Raise DatasetError naming the columns of `needed` that `header` lacks."""
    missing = sorted(set(needed) - set(header))
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
