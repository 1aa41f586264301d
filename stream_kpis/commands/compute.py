"""`stream-kpis compute`: the snapshot of a JSONL events file, offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from stream_kpis.commands.params import (
    EARLIEST_TEXT,
    check_extra_windows,
    check_windows,
    parse_seconds,
    read_as,
    settings_from_flags,
)
from stream_kpis.compute import compute
from stream_kpis.configure import contract_config, engine_config, load_judge
from stream_kpis.errors import ConfigError, shown
from stream_kpis.event_fields import EARLIEST_SECONDS
from stream_kpis.snapshot import dumps_snapshot, known_scopes
from stream_kpis.timefmt import format_utc

# Wider indentation helps no reader, and a huge one would build gigabytes of spaces.
MAX_INDENT = 16
# An unknown --program's error lists at most this many of the file's programmes.
_PROGRAMS_SHOWN = 20


def parse_as_of(value: str | None) -> float | None:
    """The `--as-of` value as UTC epoch seconds, from the event contract's earliest time on.

    An earlier clock could see no valid event (the contract refuses events before 2000), so
    it is refused rather than answered with empty windows; ConfigError names flag and value.
    """
    if value is None:
        return None
    seconds = parse_seconds("--as-of", value)
    if seconds < EARLIEST_SECONDS:
        raise ConfigError(
            f"--as-of {shown(value)} is {format_utc(seconds)}{read_as(value)}, before "
            f"{EARLIEST_TEXT}, the earliest time the event contract accepts: no event could "
            "count; give a later time"
        )
    return seconds


def only_program(snapshot: dict[str, Any], program: str, events: Path) -> dict[str, Any]:
    """The snapshot cut to `program` as `/kpis/{program}` cuts it; ConfigError naming
    `--program`, the value and the file's programmes when the file has no such programme."""
    from stream_kpis import web  # aiohttp and prometheus_client load only when needed

    programs = sorted(known_scopes(snapshot["windows"]))
    if program not in programs:
        source = "stdin" if events == Path("-") else shown(str(events))
        listed = ", ".join(programs[:_PROGRAMS_SHOWN])
        more = f", ... ({len(programs)} in all)" if len(programs) > _PROGRAMS_SHOWN else ""
        raise ConfigError(
            f"--program {shown(program)}: no KPIs for that programme in {source} as of "
            f"{snapshot['as_of']}; programmes with KPIs: {listed}{more}"
        )
    return web.only_program(snapshot, program)


@click.command("compute")
@click.argument(
    "events", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
@click.option(
    "--as-of",
    "as_of",
    metavar="T",
    help="Clock for the snapshot: RFC 3339 or epoch seconds/ms. "
    "Default: the newest event time in the file.",
)
@click.option(
    "--window",
    "windows",
    multiple=True,
    metavar="NAME=DURATION[/BUCKET]",
    callback=check_windows,
    help="Add a window (repeatable), e.g. --window 90d=90d/1d or --window 2h.",
)
@click.option(
    "--targets",
    "targets_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TOML file of KPI targets (default: STREAM_KPIS_TARGETS_FILE).",
)
@click.option("--program", help="Print only this programme's KPIs.")
@click.option(
    "--indent",
    type=click.IntRange(0, MAX_INDENT),
    default=2,
    show_default=True,
    help="JSON indentation; 0 prints one line.",
)
def compute_command(
    events: Path,
    as_of: str | None,
    windows: tuple[str, ...],
    targets_file: Path | None,
    program: str | None,
    indent: int,
) -> None:
    """Print the KPI snapshot of EVENTS (JSONL, one event per line; '-' reads stdin).

    The same validation, dedup and KPI code as the live worker, with no Kafka or Redis.
    Invalid lines are counted by reason under "events" in the output.
    """
    as_of_seconds = parse_as_of(as_of)
    settings = settings_from_flags(targets_file=targets_file)
    check_extra_windows(settings.windows, windows)
    config = engine_config(settings, extra_windows=windows)
    judge = load_judge(settings, config)
    if events == Path("-"):
        lines = sys.stdin.buffer.readlines()
    else:
        with events.open("rb") as handle:
            lines = handle.readlines()
    snapshot = compute(
        lines,
        config=config,
        contract=contract_config(settings),
        as_of=as_of_seconds,
        judge=judge,
    )
    if program is not None:
        snapshot = only_program(snapshot, program, events)
    click.echo(dumps_snapshot(snapshot, indent=indent or None))
