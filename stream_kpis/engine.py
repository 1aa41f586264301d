"""The KPI engine of one partition: dedup, apply, aggregate, read. No Kafka in here.

`PartitionEngine` owns the subject records of one partition (kept in any mutable mapping: a
dict offline, a Faust table in the worker), derives their contributions and keeps the
partition's aggregates. The same class serves `compute` (one partition, a dict) and the worker
(one engine per assigned partition, all on the worker's table), which is what makes offline
and streaming agree.

The clock only moves forward: an engine asked about an earlier clock uses its latest one.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from stream_kpis.aggregates import Aggregates, WindowCounts
from stream_kpis.contribution import Contribution, contribution
from stream_kpis.events import Event
from stream_kpis.kpis import SESSION_DURATION_BUCKETS_SECONDS
from stream_kpis.subject import (
    Record,
    SessionRules,
    apply_event,
    finalize_timed_out_sessions,
    fold_old_items,
    forget_expired,
    new_record,
)
from stream_kpis.windows import (
    DEFAULT_WINDOWS,
    WindowSpec,
    fine_bucket_seconds,
    longest_window_seconds,
    parse_windows,
)

logger = logging.getLogger(__name__)


# The outcomes a subject record counts (invalid messages have no subject).
TALLIED_OUTCOMES = ("accepted", "duplicate", "no_effect", "late")


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    NO_EFFECT = "no_effect"  # accepted, but it changed nothing
    DUPLICATE = "duplicate"
    REDELIVERED = "redelivered"  # an input offset already applied before a restart


@dataclass(frozen=True, slots=True)
class EngineConfig:
    windows: tuple[WindowSpec, ...] = field(default_factory=lambda: parse_windows(DEFAULT_WINDOWS))
    grace_seconds: float = 300.0
    session_timeout_seconds: float = 1800.0
    dedup_horizon_seconds: float = 7 * 86400.0

    @property
    def session_rules(self) -> SessionRules:
        return SessionRules(self.session_timeout_seconds, self.grace_seconds)

    @property
    def fine_bucket_seconds(self) -> int:
        return fine_bucket_seconds(self.windows)

    @property
    def longest_window_seconds(self) -> int:
        return longest_window_seconds(self.windows)


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    late: bool = False


class PartitionEngine:
    def __init__(
        self,
        config: EngineConfig,
        records: MutableMapping[str, Any] | None = None,
        *,
        partition: int = 0,
    ) -> None:
        self.config = config
        self.partition = partition
        self.records: MutableMapping[str, Any] = records if records is not None else {}
        self.clock = float("-inf")
        # Newest apply clock per input stream: ids and finished sessions are forgotten only
        # when every stream has moved past their horizon, so a stream replayed ahead of
        # another cannot expire the other's dedup ids.
        self._stream_clocks: dict[str, float] = {}
        self.watermark: float | None = None  # newest event time applied
        self._rules = config.session_rules
        self._fine = config.fine_bucket_seconds
        self._longest = config.longest_window_seconds
        self._fold_margin = self._longest + max(
            (spec.bucket_seconds for spec in config.windows), default=0
        )
        self._aggregates = Aggregates(config.windows)
        self._contributions: dict[str, Contribution] = {}
        self._due: list[tuple[float, str]] = []
        self._dirty: dict[str, Record] = {}
        # Subjects whose facts changed since their contribution was last derived: derived
        # once per flush (or read), not once per event, since a batch often holds several
        # events of one subject and a contribution costs about as much as all else together.
        # Kept in arrival order (a dict), so that sums are added in the same order every run.
        self._stale: dict[str, None] = {}
        # Messages by outcome (accepted, duplicate, no_effect, late) over the partition's
        # records: each record counts its own, so the totals recover with the records.
        self.outcome_counts: dict[str, int] = dict.fromkeys(TALLIED_OUTCOMES, 0)

    # -- applying events -------------------------------------------------------------------

    def apply(
        self,
        event: Event,
        *,
        clock: float,
        source: str | None = None,
        offset: int | None = None,
        stream: str | None = None,
    ) -> Applied:
        """Apply one valid event at the given clock.

        The clock decides dedup expiry, session timeouts and lateness for this event. Reads may
        have moved the engine's clock further (a worker replaying history on event time reads
        at the newest time of all its partitions); the aggregates follow the later of the two.

        `source` and `offset` name the input message ("topic:partition", offset); a message at
        or below the last offset applied for the subject is a redelivery and is skipped.
        `stream` names the ordered stream the event arrived in (default: `source`; for a
        forwarded event, the topic partition it was first read from).
        """
        self._move_clock(clock)
        stream = stream or source or ""
        self._stream_clocks[stream] = max(self._stream_clocks.get(stream, clock), clock)
        key = event.subject
        record = self._dirty.get(key) or self.records.get(key)
        if record is None:
            record = new_record(self.partition)

        if source is not None and offset is not None:
            if offset <= record["off"].get(source, -1):
                return Applied(Outcome.REDELIVERED)
            record["off"][source] = offset

        seen_at = record["ids"].get(event.event_id)
        if seen_at is not None and clock <= seen_at + self.config.dedup_horizon_seconds:
            self._tally(record, "duplicate")
            self._dirty[key] = record
            return Applied(Outcome.DUPLICATE)

        late = event.time < clock - self._longest
        if event.topic == "sessions":
            # Only session events close timed-out sessions: another topic's clock may run
            # ahead of the sessions topic in a replay, and must not cut sessions short.
            finalize_timed_out_sessions(record, clock, self._rules)
        effective = apply_event(record, event, clock=clock, rules=self._rules)
        record["ids"][event.event_id] = event.time
        if self.watermark is None or event.time > self.watermark:
            self.watermark = event.time

        self._tally(record, "accepted")
        if not effective:
            self._tally(record, "no_effect")
        if late:
            self._tally(record, "late")
        self._dirty[key] = record
        self._stale[key] = None
        return Applied(Outcome.ACCEPTED if effective else Outcome.NO_EFFECT, late)

    def _tally(self, record: Record, outcome: str) -> None:
        tallies = record.setdefault("n", {})
        tallies[outcome] = tallies.get(outcome, 0) + 1
        self.outcome_counts[outcome] += 1

    def flush(self) -> list[str]:
        """Write every record changed since the last flush back to the store, once each."""
        self._refresh_stale()
        written = list(self._dirty)
        for key, record in self._dirty.items():
            forget_expired(
                record,
                clock=min(self._stream_clocks.values(), default=self.clock),
                dedup_horizon_seconds=self.config.dedup_horizon_seconds,
            )
            fold_old_items(
                record,
                before=self.clock - self._fold_margin,
                histogram_bounds=SESSION_DURATION_BUCKETS_SECONDS,
            )
            self.records[key] = record
        self._dirty.clear()
        return written

    # -- the clock and reading -------------------------------------------------------------

    def read(self, clock: float) -> WindowCounts:
        """Components of every window and scope at the clock (or the engine's later one)."""
        self._move_clock(clock)
        self._refresh_stale()
        return self._aggregates.read(self.clock)

    def _move_clock(self, clock: float) -> None:
        if clock > self.clock:
            self.clock = clock
        while self._due and self._due[0][0] <= self.clock:
            _, key = heapq.heappop(self._due)
            if key in self._stale:
                continue  # derived at the next flush, at a clock at least this late
            record = self._dirty.get(key) or self.records.get(key)
            if record is not None:
                self._refresh(key, record)

    def _refresh_stale(self) -> None:
        for key in self._stale:
            record = self._dirty.get(key) or self.records.get(key)
            if record is not None:
                self._refresh(key, record)
        self._stale.clear()

    def _refresh(self, key: str, record: Record) -> None:
        new, due_at = contribution(
            record, clock=self.clock, fine_bucket_seconds=self._fine, rules=self._rules
        )
        old = self._contributions.get(key, {})
        self._aggregates.apply_change(old, new)
        if new:
            self._contributions[key] = new
        else:
            self._contributions.pop(key, None)
        if due_at is not None:
            heapq.heappush(self._due, (due_at, key))

    # -- recovery --------------------------------------------------------------------------

    def rebuild(self, keys: Iterable[str], *, clock: float) -> int:
        """Derive the aggregates from recovered records (after a restart or a rebalance)."""
        self._move_clock(clock)
        count = 0
        for key in keys:
            record = self.records.get(key)
            if record is not None:
                self._refresh(key, record)
                for outcome, value in record.get("n", {}).items():
                    self.outcome_counts[outcome] = self.outcome_counts.get(outcome, 0) + value
                count += 1
        logger.info(
            "partition %d: aggregates rebuilt from %d subject records", self.partition, count
        )
        return count

    @property
    def subject_count(self) -> int:
        return len(self._contributions)
