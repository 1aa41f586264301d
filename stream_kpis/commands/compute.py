"""`stream-kpis compute`: the snapshot of a JSONL events file, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stream_kpis.commands.params import check_extra_windows, check_windows, settings_from_flags
from stream_kpis.compute import compute
from stream_kpis.configure import contract_config, engine_config, load_judge
from stream_kpis.errors import ConfigError
from stream_kpis.snapshot import dumps_snapshot
from stream_kpis.timefmt import parse_timestamp

# Wider indentation helps no reader, and a huge one would build gigabytes of spaces.
MAX_INDENT = 16


def _parse_as_of(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number: object = float(value) if value.replace(".", "", 1).isdigit() else value
        return parse_timestamp(number)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a usage error here
        raise ConfigError(f"--as-of {value!r}: {exc}") from None


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
        as_of=_parse_as_of(as_of),
        judge=judge,
    )
    if program is not None:
        for scopes in snapshot["windows"].values():
            kept = scopes.get(program)
            scopes.clear()
            if kept is not None:
                scopes[program] = kept
    click.echo(dumps_snapshot(snapshot, indent=indent or None))
