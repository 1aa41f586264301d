"""Events already in the contract, one JSON object per line: a plain passthrough.

Lines are yielded in file order (a file may be out of event-time order on purpose); blank
lines are skipped. A line that is not a JSON object is an error naming its line number: to
send such lines to Kafka anyway (for the dead-letter path), use `stream-kpis produce`, which
forwards raw bytes.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from stream_kpis.adapters._common import Event, as_utc, open_text, readable_times, shift_events
from stream_kpis.errors import DatasetError

logger = logging.getLogger(__name__)

NAME = "jsonl"


def iter_events(
    path: str | Path, *, start: datetime | None = None, program: str | None = None
) -> Iterator[Event]:
    """The file's events in file order; `-` reads standard input.

    `start` moves every time by one constant so the earliest readable event time is `start`
    (times keep their form: RFC 3339 strings or epoch numbers). `program` tags every event.
    """
    events = _read(path)
    if program is not None:
        events = _tag(events, program)
    if start is None:
        return events

    materialised = list(events)
    times = readable_times(materialised)
    if not times:
        return iter(materialised)
    offset: timedelta = as_utc(start) - min(times)
    return shift_events(materialised, offset)


def _read(path: str | Path) -> Iterator[Event]:
    if str(path) == "-":
        yield from _parse(sys.stdin, "<stdin>")
        return
    with open_text(Path(path), newline=None) as handle:
        yield from _parse(handle, str(path))


def _parse(lines: IO[str], name: str) -> Iterator[Event]:
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}: line {line_number} is not JSON ({exc.msg})") from exc
        if not isinstance(event, dict):
            raise DatasetError(f"{name}: line {line_number} is not a JSON object")
        yield event


def _tag(events: Iterator[Event], program: str) -> Iterator[Event]:
    for event in events:
        event["program"] = program
        yield event
