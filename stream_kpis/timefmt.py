"""Timestamps of the event contract: RFC 3339 text or epoch numbers to UTC epoch seconds, and back.

Every time inside stream-kpis is a `float` of UTC epoch seconds. This module is the one place
that reads and writes the text and number forms users send and see.

Accepted RFC 3339 text (a strict profile of RFC 3339 section 5.6):

- a full date `YYYY-MM-DD`, a separator `T`, `t` or a single space, a full time `hh:mm:ss`,
  an optional fraction `.` followed by one or more digits, and a mandatory offset: `Z`, `z`
  or `+hh:mm` / `-hh:mm` (`-00:00` is read as UTC);
- ASCII digits only; the date must exist (`2023-02-30` does not); hours 00-23, minutes 00-59,
  offsets up to 23:59;
- a leap second (`:60`) only where one can fall, at 23:59:60 UTC; like POSIX time, it is read
  as the first moment of the next day;
- the fraction is kept to the microsecond; further digits are dropped (a double holds about
  0.2 µs at today's epoch anyway).

Rejected: a time without an offset ("naive"), a date alone, week or ordinal dates, the basic
format without separators (`20260131T000000Z`), hour 24, offsets without a colon or minutes,
a comma as the decimal sign, surrounding whitespace.

Epoch numbers: a number above 10**11 is epoch milliseconds, any other number epoch seconds
(10**11 seconds is in the year 5138, 10**11 milliseconds in 1973). Booleans are not numbers.
A number too large for a double is not a timestamp.

The conversions are exact up to one final rounding to a double, so `1706659200123` (ms),
`1706659200.123` (s) and `"2024-01-31T00:00:00.123Z"` give the same float.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from stream_kpis.errors import TimestampError

logger = logging.getLogger(__name__)

# Epoch numbers above this are milliseconds (KPI-SPEC section 2).
EPOCH_MS_THRESHOLD = 100_000_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS_PER_DAY = 86_400
# Five 400-year Gregorian cycles of 146097 days: `datetime` has no year 0.
_DAYS_FROM_YEAR_0_TO_2000 = 5 * 146_097
_MAX_SHOWN_CHARS = 60

_RFC3339 = re.compile(
    r"([0-9]{4})-[0-9]{2}-[0-9]{2}([Tt ])[0-9]{2}:[0-9]{2}:([0-9]{2})(?:\.[0-9]+)?"
    r"(?:([Zz])|[+-][0-9]{2}:([0-9]{2}))"
)
# Used only to explain a rejection: a date-time that lacks an offset.
_NAIVE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
)


def parse_timestamp(value: object) -> float:
    """An RFC 3339 string or an epoch number (seconds or milliseconds) as UTC epoch seconds.

    Raises `TimestampError` naming what was expected and what arrived.
    """
    if isinstance(value, str):
        return parse_rfc3339(value)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TimestampError(
            f"expected an RFC 3339 string or epoch number, got {type(value).__name__}"
        )
    return epoch_to_seconds(value)


def parse_rfc3339(text: str) -> float:
    """RFC 3339 text with `Z` or an offset (see the module docstring) as UTC epoch seconds."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise TimestampError(_explain_unparseable(text))
    year, separator, second, zulu, offset_minutes = match.groups()
    if offset_minutes is not None and offset_minutes > "59":  # fromisoformat would carry it
        raise TimestampError(f"no such UTC offset in {_quote(text)}")
    if separator == "t" or zulu == "z":
        text = text.upper()  # fromisoformat wants upper case; nothing else here has a case
    if second == "60":
        return _leap_second(text)
    if year == "0000":
        return _year_zero(text)
    try:
        # After the pattern above, fromisoformat only has to check ranges; timestamp() divides
        # the exact count of microseconds by 10**6, rounding once.
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        what = "UTC offset" if "offset" in str(exc) else f"date or time ({exc})"
        raise TimestampError(f"no such {what} in {_quote(text)}") from None


def _leap_second(text: str) -> float:
    """23:59:60 UTC, read like POSIX time as the first moment of the next day."""
    before = parse_rfc3339(f"{text[:17]}59{text[19:]}")
    if math.floor(before) % _SECONDS_PER_DAY != _SECONDS_PER_DAY - 1:
        raise TimestampError(f"a leap second can only be 23:59:60 UTC, got {_quote(text)}")
    return before + 1


def _year_zero(text: str) -> float:
    """Year 0000 (1 BC), checked and placed through year 2000, which is a leap year too."""
    return parse_rfc3339(f"2000{text[4:]}") - _DAYS_FROM_YEAR_0_TO_2000 * _SECONDS_PER_DAY


def epoch_to_seconds(number: int | float | Decimal) -> float:
    """Epoch seconds, or epoch milliseconds when above 10**11, as UTC epoch seconds."""
    if isinstance(number, bool):
        raise TimestampError("expected an epoch number, got a boolean")
    try:
        seconds = float(number)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise TimestampError(f"epoch number out of range: {_describe_number(number)}")
    if number <= EPOCH_MS_THRESHOLD:
        return seconds
    if isinstance(number, int):
        return number / 1000  # exact quotient, rounded once
    if isinstance(number, Decimal):
        return float(number.scaleb(-3))
    return seconds / 1000


def format_utc(seconds: float) -> str:
    """UTC epoch seconds as RFC 3339 with `Z`: `2026-01-31T00:00:00Z`.

    Whole seconds print without a fraction; otherwise milliseconds (`.123`) when the time
    rounds to a whole millisecond, else microseconds (`.123456`). Raises `TimestampError` for a
    value that is not finite or outside the years 1-9999.
    """
    if not math.isfinite(seconds):
        raise TimestampError(f"cannot format a non-finite time: {seconds!r}")
    whole = math.floor(seconds)
    micros = round((seconds - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    try:
        moment = _EPOCH + timedelta(seconds=whole)
    except OverflowError:
        raise TimestampError(f"time out of the years 1-9999: {seconds!r}") from None

    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if micros == 0:
        return f"{text}Z"
    if micros % 1000 == 0:
        return f"{text}.{micros // 1000:03d}Z"
    return f"{text}.{micros:06d}Z"


def _explain_unparseable(text: str) -> str:
    if _NAIVE.fullmatch(text.strip()):
        return f"expected Z or a UTC offset such as +05:30 after the time, got {_quote(text)}"
    return f"expected RFC 3339 such as 2026-01-31T00:00:00Z, got {_quote(text)}"


def _quote(text: str) -> str:
    """The text for a message: quoted, cut after 60 characters."""
    if len(text) <= _MAX_SHOWN_CHARS:
        return repr(text)
    return f"{text[:_MAX_SHOWN_CHARS]!r}… ({len(text)} characters)"


def _describe_number(number: int | float | Decimal) -> str:
    """A number for a message, cut short; `str` of a huge int would itself raise."""
    if isinstance(number, int) and number.bit_length() > 200:
        return f"an integer of about {round(number.bit_length() * 0.30103)} digits"
    text = str(number)
    return text if len(text) <= _MAX_SHOWN_CHARS else f"{text[:_MAX_SHOWN_CHARS]}…"
