"""Factories for events and engines used by the pure unit tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from stream_kpis.engine import EngineConfig, PartitionEngine
from stream_kpis.events import TYPES_BY_TOPIC, Event
from stream_kpis.windows import parse_windows

_ids = itertools.count()
TOPIC_OF = {kind: topic for topic, kinds in TYPES_BY_TOPIC.items() for kind in kinds}


def ts(text: str) -> float:
    """'2026-01-31T00:00' (UTC) to epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def event(kind: str, subject: str, at: str | float, **fields: Any) -> Event:
    time = ts(at) if isinstance(at, str) else at
    for name in ("started_at", "ended_at"):
        if isinstance(fields.get(name), str):
            fields[name] = ts(fields[name])
    for name in ("mrr", "amount"):
        if name in fields and fields[name] is not None:
            fields[name] = Decimal(str(fields[name]))
    if kind == "survey_response" and "scale" not in fields:
        fields["scale"] = "1-5" if fields.get("survey") == "csat" else "0-10"
    fields.setdefault("event_id", f"e{next(_ids)}")
    return Event(type=kind, topic=TOPIC_OF[kind], occurred_at=time, subject=subject, **fields)


def engine(*windows: str, **config: Any) -> PartitionEngine:
    specs = parse_windows(windows or ("1h", "24h", "7d", "30d"))
    return PartitionEngine(EngineConfig(windows=specs, **config))


def run(
    events: list[Event],
    *,
    windows: tuple[str, ...] = (),
    as_of: str | float | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Apply events in the given order with the clock at the newest time so far; read at as_of."""
    eng = engine(*windows, **config)
    clock = float("-inf")
    for item in events:
        clock = max(clock, item.time)
        eng.apply(item, clock=clock)
    eng.flush()
    final = ts(as_of) if isinstance(as_of, str) else (as_of if as_of is not None else clock)
    return eng.read(final)
