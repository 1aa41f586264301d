"""`stream-kpis generate`: a seeded synthetic event stream as JSONL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from stream_kpis.commands.params import (
    EARLIEST_TEXT,
    FiniteFloatRange,
    open_output,
    parse_moment,
    read_as,
)
from stream_kpis.errors import ConfigError, shown
from stream_kpis.event_fields import EARLIEST_SECONDS
from stream_kpis.events import PROGRAM_NAME_RULE, is_program_name
from stream_kpis.generate import GeneratorConfig, write
from stream_kpis.timefmt import format_utc

logger = logging.getLogger(__name__)


def parse_programs(value: str) -> tuple[str, ...]:
    """The names in a `--programs` value; ConfigError naming the flag, the value and why."""
    programs = tuple(p.strip() for p in value.split(",") if p.strip())
    problem = None
    if not programs:
        problem = "names no programme; give comma-separated names such as web,app"
    elif bad := [p for p in programs if not is_program_name(p)]:
        problem = f"{shown(bad[0])}: {PROGRAM_NAME_RULE}"
    elif twice := [p for p in programs if programs.count(p) > 1]:
        problem = f"{shown(twice[0])} is given twice"
    if problem is not None:
        raise ConfigError(f"--programs {shown(value)}: {problem}")
    return programs


@click.command("generate")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--events",
    "count",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Number of lines to write (duplicates and invalid lines included).",
)
@click.option(
    "--start",
    metavar="T",
    help="Start of the stream, RFC 3339 or epoch. Default: midnight UTC today minus "
    "--days, so the stream ends today.",
)
@click.option(
    "--days",
    type=FiniteFloatRange(min=0, min_open=True),
    default=90.0,
    show_default=True,
    help="Length of the stream in days.",
)
@click.option(
    "--programs",
    default="web,app",
    show_default=True,
    help="Comma-separated programmes; earlier ones get more visitors.",
)
@click.option(
    "--churn-spike-at",
    metavar="T",
    help="Raise the cancellation rate from this time (RFC 3339 or epoch).",
)
@click.option(
    "--churn-spike-factor",
    type=FiniteFloatRange(min=0),
    default=30.0,
    show_default=True,
    help="How many times the usual cancellation rate.",
)
@click.option(
    "--churn-spike-hours",
    type=FiniteFloatRange(min=0),
    default=6.0,
    show_default=True,
    help="How long the spike lasts.",
)
@click.option(
    "--out-of-order",
    "out_of_order",
    type=FiniteFloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Fraction of events delivered late.",
)
@click.option(
    "--max-delay-seconds",
    type=FiniteFloatRange(min=1),
    default=240.0,
    show_default=True,
    help=(
        "Longest delay of a late event or a duplicate. Above the worker's grace period "
        "(300 s by default) a late session part can come after its session was final."
    ),
)
@click.option(
    "--duplicates",
    type=FiniteFloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of lines that repeat an earlier message exactly (same event_id).",
)
@click.option(
    "--invalid",
    type=FiniteFloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of lines the contract rejects (for the dead-letter path).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    show_default=True,
    help="File to write; '-' is stdout.",
)
def generate_command(
    seed: int,
    count: int,
    start: str | None,
    days: float,
    programs: str,
    churn_spike_at: str | None,
    churn_spike_factor: float,
    churn_spike_hours: float,
    out_of_order: float,
    max_delay_seconds: float,
    duplicates: float,
    invalid: float,
    output: Path,
) -> None:
    """Write a synthetic stream of every event type as JSONL, the same for the same seed.

    Visitors arrive with a daily rhythm, browse in sessions (whole, or in parts), convert to
    subscriptions and purchases, renew, change plans, cancel, answer CSAT and NPS surveys and
    refer others. Lines are in event-time order except the --out-of-order fraction.
    """
    config = GeneratorConfig(
        seed=seed,
        events=count,
        start=parse_moment("--start", start),
        days=days,
        programs=parse_programs(programs),
        churn_spike_at=parse_moment("--churn-spike-at", churn_spike_at),
        churn_spike_factor=churn_spike_factor,
        churn_spike_hours=churn_spike_hours,
        out_of_order_fraction=out_of_order,
        max_delay_seconds=max_delay_seconds,
        duplicate_fraction=duplicates,
        invalid_fraction=invalid,
    )
    check_span(start, config.start, days)
    check_originals(count, duplicates, invalid)
    with open_output(output) as out:
        written = write(config, out)
    logger.info("wrote %d events (seed %d) to %s", written, seed, output)


def check_span(start_text: str | None, start: datetime | None, days: float) -> None:
    """ConfigError naming --start or --days when the stream would begin before the event
    contract's earliest time (2000) or end after the year 9999."""
    one_day = timedelta(days=1)
    earliest = datetime.fromtimestamp(EARLIEST_SECONDS, tz=UTC)
    if start is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if days > (today - earliest) / one_day:
            raise ConfigError(
                f"--days {days:g}: the stream would begin before {EARLIEST_TEXT}, the earliest "
                "time the event contract accepts (it begins --days before midnight UTC today); "
                "give fewer --days or a --start"
            )
    elif start < earliest:
        raise ConfigError(
            f"--start {shown(start_text or '')} is {format_utc(start.timestamp())}"
            f"{read_as(start_text or '')}, before {EARLIEST_TEXT}, the earliest time the "
            "event contract accepts: events before it would be invalid; give a later --start"
        )
    elif days > (datetime.max.replace(tzinfo=UTC) - start) / one_day:
        raise ConfigError(
            f"--start {shown(start_text or '')} with --days {days:g}: the stream would end "
            "after the year 9999"
        )


def check_originals(count: int, duplicates: float, invalid: float) -> None:
    """ConfigError when --duplicates leaves no original line for the duplicates to repeat.

    The shares are rounded as `generate` rounds them; it writes no duplicate without an original.
    """
    repeated, rejected = round(count * duplicates), round(count * invalid)
    if repeated and count - repeated - rejected <= 0:
        also = f" and --invalid {invalid:g}" if rejected else ""
        raise ConfigError(
            f"--duplicates {duplicates:g} with --events {count}{also} leaves no original "
            "event to repeat: lower --duplicates"
        )
