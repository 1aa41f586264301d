"""`stream-kpis produce` and `stream-kpis replay`: events into Kafka, keyed by subject."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from stream_kpis.adapters import DATASETS, Event, get, retime
from stream_kpis.commands.params import (
    FiniteFloatRange,
    check_topic,
    parse_moment,
    settings_from_flags,
)
from stream_kpis.errors import ConfigError, DatasetError, shown
from stream_kpis.events import PROGRAM_NAME_RULE, is_program_name
from stream_kpis.producer import Message, ProduceSummary, Routing, produce

logger = logging.getLogger(__name__)

_stderr = Console(stderr=True)


def _kafka_options(command: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option("--bootstrap-servers", help="Kafka brokers (default: settings)."),
        click.option("--rate", type=FiniteFloatRange(min=0, min_open=True),
                     metavar="EVENTS_PER_SECOND", help="Send no faster than this."),
        click.option("--key", help="Send every message with this key instead of its subject."),
        click.option("--unrouted-topic", metavar="TOPIC", callback=check_topic,
                     help="Topic for lines that are not JSON or have no known type "
                          "(default: the sessions topic), where the worker dead-letters them."),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="Show a progress bar on stderr."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@click.command("produce")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@_kafka_options
def produce_command(
    source: Path,
    bootstrap_servers: str | None,
    rate: float | None,
    key: str | None,
    unrouted_topic: str | None,
    progress: bool,
) -> None:
    """Send the JSONL events of SOURCE ('-' reads stdin) to their topics, keyed by subject.

    The topic follows each event's type (session* to the sessions topic, subscription_* and
    purchase to subscriptions, survey_response and referral to surveys). Lines that are not
    JSON or have no known type are sent unchanged to --unrouted-topic and counted.
    """
    if source == Path("-"):
        lines: Iterable[bytes] = sys.stdin.buffer
        total = None
    else:
        total = _count_lines(source)
        lines = _read_lines(source)
    _send(lines, total, bootstrap_servers, rate, key, unrouted_topic, progress)


def _check_program(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of replay's --program: a name the event contract accepts, so no event is lost."""
    if value is not None and not is_program_name(value):
        raise click.BadParameter(f"{shown(value)}: {PROGRAM_NAME_RULE}", ctx, param)
    return value


@click.command("replay")
@click.argument("dataset", type=click.Choice(sorted(DATASETS)))
@click.argument(
    "path", required=False, type=click.Path(exists=True, allow_dash=True, path_type=Path)
)
@_kafka_options
@click.option(
    "--retime",
    is_flag=True,
    help="Shift every time by one constant so the dataset's latest event is now.",
)
@click.option("--start", metavar="T", help="Shift every time so the first event is at T.")
@click.option("--program", callback=_check_program, help="Set this programme on every event.")
@click.option("--dry-run", is_flag=True, help="Write the events as JSONL to stdout; send nothing.")
def replay_command(
    dataset: str,
    path: Path | None,
    bootstrap_servers: str | None,
    rate: float | None,
    key: str | None,
    unrouted_topic: str | None,
    progress: bool,
    retime: bool,
    start: str | None,
    program: str | None,
    dry_run: bool,
) -> None:
    """Map DATASET at PATH to events and send them (PATH defaults to the bundled copy).

    Datasets: shoppers, telco (bundled in data/), kkbox (the folder), cdnow, jsonl. See
    docs/datasets.md for each mapping.
    """
    if retime and start:
        raise ConfigError("--retime and --start both move the timeline: give one of them")
    moment = parse_moment("--start", start)
    try:
        events: Iterable[Event] = get(dataset).events(path, start=moment, program=program)
        if retime:
            now = datetime.now(UTC).replace(microsecond=0)
            events = retime_events(events, now)

        lines = (json.dumps(event, separators=(",", ":")).encode("utf-8") for event in events)
        if dry_run:
            out = sys.stdout.buffer
            for line in lines:
                out.write(line + b"\n")
            out.flush()
            return
        materialised = list(lines)
    except UnicodeDecodeError as exc:
        raise DatasetError(not_text(path or get(dataset).bundled_path, exc)) from None
    _send(materialised, len(materialised), bootstrap_servers, rate, key, unrouted_topic, progress)


def not_text(path: Path | None, error: UnicodeDecodeError) -> str:
    """One line saying where the dataset at `path` stops being text in `error`'s encoding."""
    encoding = error.encoding.upper()
    if path is None or not path.is_file():
        return f"{path}: a file in this folder is not {encoding} text ({error.reason})"
    found = _first_undecodable(path, error.encoding)
    if found is None:
        return f"{path}: not {encoding} text ({error.reason})"
    line, offset, first = found
    byte = first.object[first.start]
    return (
        f"{path}: not {encoding} text: line {line}, byte offset {offset} is 0x{byte:02x} "
        f"({first.reason})"
    )


def _first_undecodable(path: Path, encoding: str) -> tuple[int, int, UnicodeDecodeError] | None:
    """The line (from 1) and byte offset (from 0) of the first byte `encoding` cannot decode,
    with the decoding error. No UTF-8 or ASCII character holds the byte of '\\n', so
    decoding line by line finds the same bytes as decoding the whole file."""
    offset = 0
    try:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode(encoding)
                except UnicodeDecodeError as exc:
                    return number, offset + exc.start, exc
                offset += len(line)
    except OSError:
        pass
    return None


def retime_events(events: Iterable[Event], end: datetime) -> list[Event]:
    """The events shifted so the latest is at `end`; DatasetError when none has a time."""
    moved = retime(events, end)
    if not moved:
        raise DatasetError("the dataset holds no events")
    return moved


def _send(
    lines: Iterable[bytes],
    total: int | None,
    bootstrap_servers: str | None,
    rate: float | None,
    key: str | None,
    unrouted_topic: str | None,
    progress: bool,
) -> None:
    settings = settings_from_flags(bootstrap_servers=bootstrap_servers)
    routing = Routing.from_settings(settings, unrouted_topic=unrouted_topic, key=key)
    with _progress_bar(total, enabled=progress) as advance:
        summary = asyncio.run(
            produce(lines, settings=settings, routing=routing, rate_per_second=rate,
                    on_message=advance)
        )  # fmt: skip
    _report(summary)


@contextmanager
def _progress_bar(total: int | None, *, enabled: bool) -> Iterator[_Advance]:
    if not enabled:
        yield _Advance(None, None)
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=_stderr) as bar:
        advance = _Advance(bar, bar.add_task("producing", total=total, speed=""))
        yield advance
        advance.finish()


class _Advance:
    """Counts messages handed to the client; moves the bar every few hundred of them."""

    _EVERY = 500

    def __init__(self, bar: Progress | None, task: TaskID | None) -> None:
        self.bar = bar
        self.task = task
        self.count = 0

    def __call__(self, message: Message) -> None:
        self.count += 1
        if self.count % self._EVERY == 0:
            self._update()

    def finish(self) -> None:
        """Show the final count (blank lines, which are not sent, shrink the total)."""
        self._update(total=self.count)

    def _update(self, **fields: object) -> None:
        if self.bar is None or self.task is None:
            return
        elapsed = self.bar.tasks[0].elapsed or 0.0
        speed = f"{self.count / elapsed:.0f}/s" if elapsed else ""
        self.bar.update(self.task, completed=self.count, speed=speed, **fields)  # type: ignore[arg-type]


def _report(summary: ProduceSummary) -> None:
    for line in summary.lines():
        _stderr.print(line, highlight=False)


def _count_lines(path: Path) -> int:
    count = 0
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                count += chunk.count(b"\n")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    return count


def _read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle
