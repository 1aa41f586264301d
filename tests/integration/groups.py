"""Several real workers in one consumer group, and reading the Redis feed they share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from stream_kpis.generate import GeneratorConfig, generate
from stream_kpis.timefmt import format_utc
from tests.workers import WorkerProcess

# Three programmes, so that the example targets file's programme `default` has data too.
PROGRAMS = ("web", "app", "default")


def generated_lines(seed: int, events: int) -> list[str]:
    """A seeded 40-day stream with duplicates and invalid messages, in time order."""
    return generate(
        GeneratorConfig(
            seed=seed,
            events=events,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            days=40,
            programs=PROGRAMS,
            duplicate_fraction=0.02,
            invalid_fraction=0.02,
            out_of_order_fraction=0.0,
        )
    )


def csat_lines(label: str, at_seconds: float, count: int, *, program: str = "web") -> list[str]:
    """`count` CSAT responses (scores 1..5 in turn) of new customers, all at one time."""
    return [
        json.dumps(
            {
                "event_id": f"{label}-{i}",
                "type": "survey_response",
                "occurred_at": format_utc(at_seconds),
                "customer_id": f"{label}-customer-{i}",
                "program": program,
                "survey": "csat",
                "score": 1 + i % 5,
            }
        )
        for i in range(count)
    ]


def metric_total(text: str, name: str) -> float:
    """The sum of every sample of one metric (its full sample name) in a /metrics text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def newest_time(snapshot: dict[str, Any]) -> float:
    return datetime.fromisoformat(snapshot["as_of"].replace("Z", "+00:00")).timestamp()


def messages_seen(snapshot: dict[str, Any]) -> int:
    events = snapshot.get("events", {})
    return int(
        events.get("accepted", 0)
        + events.get("duplicate", 0)
        + sum(events.get("invalid", {}).values())
    )


def content(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without the time it was written, for comparing two reads."""
    return {key: value for key, value in snapshot.items() if key != "published_at"}


class WorkerGroup:
    """`size` workers with one environment: the same app id, topics and Redis prefix."""

    def __init__(self, env: dict[str, str], log_dir: Path, size: int = 2) -> None:
        self.workers = [WorkerProcess(env, log_dir, name=f"worker{i}") for i in range(size)]

    def start(self) -> WorkerGroup:
        for worker in self.workers:
            worker.start()
        for worker in self.workers:
            worker.wait_ready()
        return self

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def log_tails(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log_tail()}" for w in self.workers)


class Feed:
    """The Redis keys a worker group writes under `prefix`."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True
        )
        self.prefix = prefix

    @property
    def snapshot_key(self) -> str:
        return f"{self.prefix}:snapshot"

    def snapshot(self) -> dict[str, Any] | None:
        try:
            text = self.client.get(self.snapshot_key)
        except redis.RedisError:
            return None
        return None if text is None else dict(json.loads(text))

    def partition_owners(self, partitions: int) -> dict[int, dict[str, str]]:
        owners: dict[int, dict[str, str]] = {}
        for partition in range(partitions):
            fields = self.client.hgetall(f"{self.prefix}:partition:{partition}")
            if fields:
                owners[partition] = {
                    "worker": str(fields["worker"]),
                    "generation": str(fields["generation"]),
                }
        return owners

    def close(self) -> None:
        self.client.close()


def wait_for_stable_snapshot(
    read: Callable[[], dict[str, Any] | None],
    expected_messages: int,
    *,
    describe: Callable[[], str] = lambda: "",
    timeout_seconds: float = 120,
    settle_seconds: float = 1.5,
    stuck_seconds: float = 20,
) -> dict[str, Any]:
    """Wait until the snapshot accounts for every message and stays the same over a few
    publish rounds (the workers have agreed on one clock and published at it).

    A snapshot that stays the same for `stuck_seconds` short of the expected messages fails at
    once: messages were lost, and waiting longer would not bring them back.
    """
    deadline = time.monotonic() + timeout_seconds
    previous: dict[str, Any] | None = None
    unchanged_since = time.monotonic()
    snapshot: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        snapshot = read()
        same = (
            snapshot is not None and previous is not None and content(previous) == content(snapshot)
        )
        if not same:
            unchanged_since = time.monotonic()
        if snapshot is not None and same and messages_seen(snapshot) >= expected_messages:
            return snapshot
        if same and time.monotonic() - unchanged_since > stuck_seconds:
            assert snapshot is not None
            raise AssertionError(
                f"the snapshot settled at {messages_seen(snapshot)} of {expected_messages} "
                f"messages (events: {snapshot.get('events')}):\n{describe()}"
            )
        previous = snapshot
        time.sleep(settle_seconds)
    seen = None if snapshot is None else snapshot.get("events")
    raise AssertionError(
        f"no stable snapshot with {expected_messages} messages in {timeout_seconds} s "
        f"(last events: {seen}):\n{describe()}"
    )
