"""Timestamps: the accepted RFC 3339 profile, epoch seconds and milliseconds, and formatting."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_kpis.errors import StreamKpisError, TimestampError
from stream_kpis.timefmt import epoch_to_seconds, format_utc, parse_rfc3339, parse_timestamp

# 2024-01-31T00:00:00Z, worked out with the stdlib's calendar, not the code under test.
JAN_31 = calendar.timegm((2024, 1, 31, 0, 0, 0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-31T00:00:00Z", JAN_31),
        ("2024-01-31t00:00:00z", JAN_31),
        ("2024-01-31 00:00:00Z", JAN_31),
        ("2024-01-31T05:30:00+05:30", JAN_31),
        ("2024-01-30T19:00:00-05:00", JAN_31),
        ("2024-01-31T00:00:00-00:00", JAN_31),
        ("2024-01-31T00:00:00+00:00", JAN_31),
        ("2024-01-31T00:00:00.5Z", JAN_31 + 0.5),
        ("2024-01-31T00:00:00.250000Z", JAN_31 + 0.25),
        # Digits beyond the microsecond are dropped.
        ("2024-01-31T00:00:00.1234567Z", JAN_31 + 0.123456),
        ("2024-02-29T12:00:00Z", calendar.timegm((2024, 2, 29, 12, 0, 0))),
        ("2000-01-01T00:00:00Z", 946684800),
        # A leap second is the first moment of the next day, as in POSIX time.
        ("2016-12-31T23:59:60Z", calendar.timegm((2017, 1, 1, 0, 0, 0))),
        ("2017-01-01T05:29:60+05:30", calendar.timegm((2017, 1, 1, 0, 0, 0))),
        # Year 0 is a leap year; 0000-03-01 is 60 days after 0000-01-01.
        ("0000-03-01T00:00:00Z", calendar.timegm((1, 1, 1, 0, 0, 0)) - (366 - 60) * 86400),
    ],
)
def test_rfc3339_accepted(text: str, expected: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-6)
    assert parse_timestamp(text) == parse_rfc3339(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2024-01-31T00:00:00", "offset"),  # naive
        ("2024-01-31 00:00", "offset"),
        ("2024-01-31", "RFC 3339"),
        ("20240131T000000Z", "RFC 3339"),
        ("2024-W05-3T00:00:00Z", "RFC 3339"),
        ("2024-031T00:00:00Z", "RFC 3339"),
        ("2024-01-31T00:00Z", "RFC 3339"),
        ("2024-01-31T00:00:00+0530", "RFC 3339"),
        ("2024-01-31T00:00:00+05", "RFC 3339"),
        ("2024-01-31T00:00:00,5Z", "RFC 3339"),
        (" 2024-01-31T00:00:00Z", "RFC 3339"),
        ("2024-01-31T00:00:00Z\n", "RFC 3339"),
        ("2024-01-31T00:00:00.Z", "RFC 3339"),
        ("2024-01-31T00:00:00ZZ", "RFC 3339"),
        ("٢٠٢٤-01-31T00:00:00Z", "RFC 3339"),  # Arabic-Indic digits
        ("2023-02-29T00:00:00Z", "no such date"),
        ("2023-02-30T00:00:00Z", "no such date"),
        ("2024-13-01T00:00:00Z", "no such date"),
        ("2024-01-31T24:00:00Z", "no such date or time"),
        ("2024-01-31T23:60:00Z", "no such date or time"),
        ("2024-01-31T00:00:00+24:00", "UTC offset"),
        ("2024-01-31T00:00:00+05:60", "UTC offset"),
        ("2016-12-31T12:59:60Z", "leap second"),
        ("", "RFC 3339"),
    ],
)
def test_rfc3339_rejected(text: str, says: str) -> None:
    with pytest.raises(TimestampError, match=says):
        parse_rfc3339(text)


def test_timestamp_error_is_a_stream_kpis_error_and_a_value_error() -> None:
    with pytest.raises(StreamKpisError):
        parse_rfc3339("yesterday")
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")


def test_long_text_is_cut_in_the_message() -> None:
    with pytest.raises(TimestampError) as caught:
        parse_rfc3339("x" * 5000)
    assert len(str(caught.value)) < 200
    assert "5000 characters" in str(caught.value)


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (JAN_31, JAN_31),
        (JAN_31 * 1000, JAN_31),
        (JAN_31 * 1000 + 123, JAN_31 + 0.123),
        (Decimal(JAN_31) + Decimal("0.123"), JAN_31 + 0.123),
        (JAN_31 + 0.5, JAN_31 + 0.5),
        (Decimal(JAN_31 * 1000 + 500), JAN_31 + 0.5),
        (float(JAN_31 * 1000 + 500), JAN_31 + 0.5),
        # 10**11 itself is seconds (year 5138); just above it is milliseconds (1973).
        (100_000_000_000, 1e11),
        (100_000_000_001, 100_000_000.001),
        (0, 0.0),
        (-86400, -86400.0),
    ],
)
def test_epoch_numbers(number: int | float | Decimal, expected: float) -> None:
    assert epoch_to_seconds(number) == pytest.approx(expected, abs=1e-6)
    assert parse_timestamp(number) == epoch_to_seconds(number)


@pytest.mark.parametrize("number", [float("inf"), float("nan"), 10**400, Decimal("1e999")])
def test_epoch_numbers_out_of_range(number: int | float | Decimal) -> None:
    with pytest.raises(TimestampError, match="out of range"):
        epoch_to_seconds(number)


def test_huge_integer_message_does_not_print_every_digit() -> None:
    with pytest.raises(TimestampError, match="an integer of about 4999 digits") as caught:
        epoch_to_seconds(10**4999)  # 5000 digits; the message estimates from the bit length
    assert len(str(caught.value)) < 100


@pytest.mark.parametrize("value", [True, False, None, [1], {"a": 1}, b"2024"])
def test_non_timestamps(value: object) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(value)


def test_milliseconds_seconds_and_text_give_the_same_float() -> None:
    text = parse_rfc3339("2024-01-31T00:00:00.123Z")
    assert epoch_to_seconds(JAN_31 * 1000 + 123) == text
    assert epoch_to_seconds(Decimal(f"{JAN_31}.123")) == text
    assert float(Fraction(JAN_31 * 1000 + 123, 1000)) == text


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    st.sampled_from(["T", "t", " "]),
)
def test_any_instant_in_any_offset(moment: datetime, offset_minutes: int, separator: str) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.isoformat(sep=separator)
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert parse_rfc3339(text) == float(Fraction(micros, 1_000_000))


@given(st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000))
def test_any_millisecond_agrees_across_forms(millis: int) -> None:
    seconds, rest = divmod(millis, 1000)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    text = f"{moment:%Y-%m-%dT%H:%M:%S}.{rest:03d}Z"
    assert epoch_to_seconds(millis) == parse_rfc3339(text)
    assert epoch_to_seconds(Decimal(millis) / 1000) == parse_rfc3339(text)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (calendar.timegm((2026, 1, 31, 0, 0, 0)), "2026-01-31T00:00:00Z"),
        (float(calendar.timegm((2026, 1, 31, 0, 0, 0))), "2026-01-31T00:00:00Z"),
        (JAN_31 + 0.5, "2024-01-31T00:00:00.500Z"),
        (JAN_31 + 0.123, "2024-01-31T00:00:00.123Z"),
        (JAN_31 + 0.000001, "2024-01-31T00:00:00.000001Z"),
        (JAN_31 - 0.0000001, "2024-01-31T00:00:00Z"),  # rounds to the microsecond
        (0, "1970-01-01T00:00:00Z"),
        (-1.5, "1969-12-31T23:59:58.500Z"),
        (calendar.timegm((1, 1, 1, 0, 0, 0)), "0001-01-01T00:00:00Z"),
        (calendar.timegm((9999, 12, 31, 23, 59, 59)), "9999-12-31T23:59:59Z"),
    ],
)
def test_format_utc(seconds: float, expected: str) -> None:
    assert format_utc(seconds) == expected


@pytest.mark.parametrize(
    "seconds",
    [float("inf"), float("nan"), calendar.timegm((9999, 12, 31, 23, 59, 59)) + 1, -62135596801],
)
def test_format_utc_refuses_what_has_no_date(seconds: float) -> None:
    with pytest.raises(TimestampError):
        format_utc(seconds)


@given(st.integers(min_value=-62135596800, max_value=253402300799), st.integers(0, 999))
def test_format_then_parse_is_the_identity_to_the_millisecond(seconds: int, millis: int) -> None:
    value = float(Fraction(seconds * 1000 + millis, 1000))
    assert parse_rfc3339(format_utc(value)) == value
