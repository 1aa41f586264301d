"""Checks of single fields of the event contract, for `stream_kpis.events`.

Each check takes a value as the JSON parser produced it (str, int, Decimal for any number with a
fraction or exponent, bool, None, list, dict) and returns it normalised, or raises `Invalid`
with the reason code, the field and a detail that says what was expected and what arrived.
`None` is an absent field: a JSON `null` and a missing key are the same.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Literal, overload

import msgspec

from stream_kpis.errors import TimestampError
from stream_kpis.timefmt import epoch_to_seconds, parse_rfc3339

logger = logging.getLogger(__name__)

MAX_ID_CHARS = 128
# 2000-01-01T00:00:00Z: anything earlier is a unit or clock mistake, not a customer event.
EARLIEST_SECONDS = 946_684_800.0
SCALES: dict[str, tuple[int, int]] = {"1-5": (1, 5), "0-10": (0, 10)}

# Money from 10**15 per event up counts as infinite: sums over billions of events must stay
# exact in 34 digits (cents included) and finite as doubles, so that no total overflows.
_MAX_MONEY_EXPONENT = 15
MAX_MONEY_TEXT = "1e15"
# A duration longer than any two valid timestamps can be apart (2000 to 9999 is under 2.6e11 s
# and real sessions are hours long) counts as infinite too: 10**9 s is about 31 years.
MAX_DURATION_SECONDS = 1e9
# Converted amounts keep 34 significant digits (IEEE decimal128), far more than money needs.
_MONEY_CONTEXT = Context(prec=34)
_ZERO = Decimal(0)
_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SHOWN_CHARS = 60


class Invalid(Exception):
    """A field (or the whole message, `field` None) breaks the contract."""

    def __init__(self, reason: str, field: str | None, detail: str) -> None:
        super().__init__(reason, field, detail)
        self.reason = reason
        self.field = field
        self.detail = detail
        self.event_type: str | None = None  # the message's type string, once it is known


class Unreadable:
    """Stands for a contract field whose value holds an integer too large to read."""

    def __repr__(self) -> str:
        return "UNREADABLE"


UNREADABLE = Unreadable()


def missing(field: str, context: str = "") -> Invalid:
    suffix = f" ({context})" if context else ""
    return Invalid("missing_field", field, f"expected {field}{suffix}, got none")


@overload
def text(value: Any, field: str, *, required: Literal[True]) -> str: ...
@overload
def text(value: Any, field: str, *, required: bool = False) -> str | None: ...
def text(value: Any, field: str, *, required: bool = False) -> str | None:
    """A string of 1 to MAX_ID_CHARS characters (code points)."""
    if value is None:
        if required:
            raise missing(field)
        return None
    if type(value) is not str:
        raise Invalid(
            "wrong_type",
            field,
            f"expected a string of 1-{MAX_ID_CHARS} characters, got {got(value)}",
        )
    if not 0 < len(value) <= MAX_ID_CHARS:
        raise Invalid(
            "invalid_value",
            field,
            f"expected 1-{MAX_ID_CHARS} characters, got {len(value)}: {quote(value)}",
        )
    return value


def free_text(value: Any, field: str) -> str | None:
    """An optional string of any length."""
    if value is None or type(value) is str:
        return value
    raise Invalid("wrong_type", field, f"expected a string, got {got(value)}")


def flag(value: Any, field: str) -> bool | None:
    """An optional `true` or `false`."""
    if value is None or type(value) is bool:
        return value
    raise Invalid("wrong_type", field, f"expected true or false, got {got(value)}")


@overload
def choice(
    value: Any, field: str, options: Mapping[str, object], *, required: Literal[True]
) -> str: ...
@overload
def choice(
    value: Any, field: str, options: Mapping[str, object], *, required: bool = False
) -> str | None: ...
def choice(
    value: Any, field: str, options: Mapping[str, object], *, required: bool = False
) -> str | None:
    """One of the strings `options` (exactly, case included)."""
    if value is None:
        if required:
            raise missing(field)
        return None
    expected = " or ".join(f'"{option}"' for option in options)
    if type(value) is not str:
        raise Invalid("wrong_type", field, f"expected {expected}, got {got(value)}")
    if value not in options:
        raise Invalid("invalid_value", field, f"expected {expected}, got {quote(value)}")
    return value


@overload
def timestamp(
    value: Any, field: str, *, now: float, max_skew_seconds: float, required: Literal[True]
) -> float: ...
@overload
def timestamp(
    value: Any, field: str, *, now: float, max_skew_seconds: float, required: bool = False
) -> float | None: ...
def timestamp(
    value: Any, field: str, *, now: float, max_skew_seconds: float, required: bool = False
) -> float | None:
    """RFC 3339 text or an epoch number as UTC seconds, from 2000 to `now + max_skew_seconds`."""
    if value is None:
        if required:
            raise missing(field)
        return None
    try:
        if type(value) is str:
            seconds = parse_rfc3339(value)
        elif type(value) is int or type(value) is Decimal:
            seconds = epoch_to_seconds(value)
        else:
            raise Invalid(
                "wrong_type",
                field,
                f"expected an RFC 3339 string or epoch number, got {got(value)}",
            )
    except TimestampError as exc:
        raise Invalid("invalid_timestamp", field, str(exc)) from None

    if seconds < EARLIEST_SECONDS:
        raise Invalid(
            "timestamp_too_old", field, f"expected 2000-01-01T00:00:00Z or later, got {show(value)}"
        )
    if seconds > now + max_skew_seconds:
        raise Invalid(
            "timestamp_in_future",
            field,
            f"expected at most {max_skew_seconds:g} s after the clock, "
            f"got {show(value)}, {seconds - now:.0f} s after it",
        )
    return seconds


def duration(value: Any, field: str) -> float | None:
    """An optional finite number of seconds >= 0."""
    if value is None:
        return None
    if type(value) is not int and type(value) is not Decimal:
        raise Invalid("wrong_type", field, f"expected a number of seconds, got {got(value)}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION_SECONDS:
        raise Invalid(
            "invalid_amount",
            field,
            f"expected a number of seconds from 0 to {MAX_DURATION_SECONDS:g}, got {show(value)}",
        )
    return seconds + 0.0  # -0.0 becomes 0.0


def money(value: Any, field: str, *, required: bool = False) -> Decimal | None:
    """An amount >= 0: a JSON number or a string of plain ASCII decimal digits ("49.90")."""
    if value is None:
        if required:
            raise missing(field)
        return None
    if type(value) is Decimal:
        amount = value
    elif type(value) is int:
        amount = Decimal(value)
    elif type(value) is str:
        if _PLAIN_DECIMAL.fullmatch(value) is None:
            raise _unplain_money(value, field)
        amount = Decimal(value)
    else:
        raise Invalid(
            "wrong_type",
            field,
            f'expected a number or a string of decimal digits such as "49.90", got {got(value)}',
        )

    if amount < 0:
        raise Invalid("invalid_amount", field, f"expected an amount >= 0, got {show(value)}")
    if not amount:
        return _ZERO  # also turns -0.0 and 0E+5 into a plain 0
    if amount.adjusted() >= _MAX_MONEY_EXPONENT:
        raise Invalid(
            "invalid_amount", field, f"expected an amount below {MAX_MONEY_TEXT}, got {show(value)}"
        )
    return amount


def _unplain_money(value: str, field: str) -> Invalid:
    """Why a money string is refused: a negative or non-finite amount, or not plain digits."""
    parsed: Decimal | None = None
    if value.isascii() and len(value) <= _SHOWN_CHARS:
        try:
            parsed = Decimal(value)
        except InvalidOperation:
            parsed = None
    if parsed is not None and (not parsed.is_finite() or parsed < 0):
        return Invalid(
            "invalid_amount", field, f"expected a finite amount >= 0, got {quote(value)}"
        )
    return Invalid(
        "invalid_value",
        field,
        f'expected ASCII digits and an optional decimal point ("49.90"), got {quote(value)}',
    )


def in_reporting_currency(
    amount: Decimal | None,
    field: str,
    currency: Any,
    *,
    reporting_currency: str,
    exchange_rates: Mapping[str, Decimal],
) -> Decimal | None:
    """`amount` converted from `currency` (case-insensitive); the currency is checked even
    when there is no amount. `exchange_rates` has upper-case keys."""
    if currency is None:
        return amount
    if type(currency) is not str:
        raise Invalid("wrong_type", "currency", f"expected a currency code, got {got(currency)}")
    code = currency.upper()
    if code == reporting_currency:
        return amount
    rate = exchange_rates.get(code)
    if rate is None:
        known = sorted([reporting_currency, *exchange_rates])
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        raise Invalid(
            "unknown_currency",
            "currency",
            f"expected a currency with a configured rate ({shown}), got {quote(currency)}",
        )
    if amount is None:
        return None
    converted = _MONEY_CONTEXT.multiply(amount, rate)
    if converted and converted.adjusted() >= _MAX_MONEY_EXPONENT:
        raise Invalid(
            "invalid_amount",
            field,
            f"expected below {MAX_MONEY_TEXT} after conversion from {code}, "
            f"got {show(amount)} {code}",
        )
    return converted


def score(value: Any, field: str, scale: str) -> int:
    """A required integer (`5.0` counts) within the bounds of `scale`."""
    if value is None:
        raise missing(field)
    if type(value) is Decimal:
        if value != value.to_integral_value():
            raise Invalid("invalid_value", field, f"expected an integer, got {show(value)}")
    elif type(value) is not int:
        raise Invalid("wrong_type", field, f"expected an integer, got {got(value)}")
    low, high = SCALES[scale]
    if not low <= value <= high:
        raise Invalid(
            "score_out_of_range",
            field,
            f"expected an integer from {low} to {high} on scale {scale}, got {show(value)}",
        )
    return int(value)


# -- showing values in details -----------------------------------------------------------------


def quote(value: str) -> str:
    """A string as JSON, cut after 60 characters."""
    if len(value) <= _SHOWN_CHARS:
        return msgspec.json.encode(value).decode()
    return f"{msgspec.json.encode(value[:_SHOWN_CHARS]).decode()}… ({len(value)} characters)"


def show(value: Any) -> str:
    """A JSON value as it arrived, cut short."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is str:
        return quote(value)
    if type(value) is int and value.bit_length() > 200:
        # str() of an int over 4300 digits raises; the size is what matters here.
        return f"an integer of about {round(value.bit_length() * math.log10(2))} digits"
    if type(value) is int or type(value) is Decimal:
        number = str(value)
        if len(number) <= _SHOWN_CHARS:
            return number
        return f"{number[:_SHOWN_CHARS]}… ({len(number)} characters)"
    if type(value) is list:
        return f"an array of {len(value)} items"
    if type(value) is dict:
        return f"an object with {len(value)} keys"
    if value is UNREADABLE:
        return "a value holding an integer too large to read"
    return type(value).__name__


def kind(value: Any) -> str:
    """The JSON type of a value, without the value."""
    if value is True or value is False:
        return "a boolean"
    if type(value) is str:
        return "a string"
    if type(value) is int or type(value) is Decimal:
        return "a number"
    if type(value) is list:
        return "an array"
    if type(value) is dict:
        return "an object"
    return show(value)


def got(value: Any) -> str:
    """The JSON type of a value and the value: `the number 42`, `an array of 3 items`."""
    if type(value) is str:
        return f"the string {quote(value)}"
    if value is True or value is False:
        return f"the boolean {show(value)}"
    if type(value) is Decimal or (type(value) is int and value.bit_length() <= 200):
        return f"the number {show(value)}"
    return show(value)
