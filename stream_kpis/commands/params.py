"""Option types and checks shared by the commands, so a bad value is named with its flag."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import click

from stream_kpis.errors import ConfigError, TimestampError, shown
from stream_kpis.event_fields import EARLIEST_SECONDS
from stream_kpis.settings import Settings, check_topic_name, load_settings
from stream_kpis.timefmt import EPOCH_MS_THRESHOLD, epoch_to_seconds, format_utc, parse_rfc3339
from stream_kpis.windows import parse_window


class FiniteFloatRange(click.FloatRange):
    """A `click.FloatRange` that also refuses nan and infinity (nan passes every bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def check_windows(
    ctx: click.Context, param: click.Parameter, texts: tuple[str, ...]
) -> tuple[str, ...]:
    """Callback of a `--window` option: each value parses, and the names are not repeated."""
    names = []
    for text in texts:
        name, equals, _ = text.rpartition("=")
        if equals and not name.strip():
            raise click.BadParameter(
                f"{text!r} has no name before '=': write NAME=DURATION[/BUCKET] or "
                "DURATION[/BUCKET]",
                ctx,
                param,
            )
        try:
            names.append(parse_window(text).name)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
        if names.count(names[-1]) > 1:
            message = f"{text!r}: a window is named {names[-1]!r} already"
            raise click.BadParameter(message, ctx, param)
    return texts


def check_extra_windows(configured: list[str], texts: tuple[str, ...]) -> None:
    """ConfigError naming the `--window` value whose name is a configured window's too."""
    taken = {parse_window(text).name for text in configured}
    for text in texts:
        name = parse_window(text).name
        if name in taken:
            raise ConfigError(
                f"--window {text!r}: {name!r} is a window already (STREAM_KPIS_WINDOWS: "
                f"{', '.join(configured)}); give this one another name, NAME=DURATION[/BUCKET]"
            )


def open_output(path: Path) -> IO[str]:
    """`path` ('-' is stdout) opened to write text; ConfigError naming it when that fails."""
    try:
        return click.open_file(str(path), "w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--output {str(path)!r}: cannot write ({exc.strerror})") from None


def settings_from_flags(**options: Any) -> Settings:
    """`load_settings` with the current command's flag values, naming a bad one by its flag."""
    context = click.get_current_context(silent=True)
    params = context.command.params if context is not None else []
    flags = {param.name: param.opts[0] for param in params if param.name and param.opts}
    return load_settings(flags=flags, **options)


def check_topic(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of an option naming a Kafka topic: refused unless Kafka accepts the name."""
    if value is None:
        return None
    try:
        return check_topic_name(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from None


# What a time flag (--start, --as-of, ...) accepts, for its error messages.
TIME_FORMS = (
    "RFC 3339 with an offset, such as 2026-01-31T00:00:00Z, or epoch seconds "
    "(milliseconds above 10**11)"
)
EARLIEST_TEXT = format_utc(EARLIEST_SECONDS)
# A plain decimal number, sign and exponent allowed; not Python's extras (nan, inf, 1_000, 0x1).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Text that tries to be an RFC 3339 date-time: its own parse error says what is wrong with it.
_DATE_LIKE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_seconds(option: str, value: str) -> float:
    """An option's RFC 3339 or epoch value as UTC epoch seconds within the years 1-9999.

    ConfigError names the option and the value and says which forms are accepted.
    """
    number = _NUMBER.fullmatch(value) is not None
    try:
        seconds = epoch_to_seconds(Decimal(value)) if number else parse_rfc3339(value)
        format_utc(seconds)  # the range every time must stay within to be shown
    except (TimestampError, ArithmeticError) as exc:
        if number:
            detail = f"out of the years 1-9999{read_as(value)}"
        elif _DATE_LIKE.match(value):
            detail = str(exc)
        else:
            detail = "not a time"
        raise ConfigError(f"{option} {shown(value)}: {detail}; give {TIME_FORMS}") from None
    return seconds


def read_as(value: str) -> str:
    """' (read as epoch milliseconds)' for a number above 10**11, else ''."""
    try:
        milliseconds = _NUMBER.fullmatch(value) is not None and Decimal(value) > EPOCH_MS_THRESHOLD
    except ArithmeticError:  # an exponent too large for Decimal: far above the threshold
        milliseconds = not value.lstrip("+").startswith("-")
    return " (read as epoch milliseconds)" if milliseconds else ""


def parse_moment(option: str, value: str | None) -> datetime | None:
    """An option's RFC 3339 or epoch value as a UTC datetime; ConfigError naming the option."""
    if value is None:
        return None
    return datetime.fromtimestamp(parse_seconds(option, value), tz=UTC)
