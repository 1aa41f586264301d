"""The dashboard feed with two workers in one group: Redis, HTTP and `compute` agree.

One group serves the whole module. A generated stream is replayed through the real broker into
one worker; then a second worker joins the group and takes half of the partitions, while the
Redis snapshot is watched (it must never count a partition twice or lose one). Then the tests
read the Redis snapshot, both workers' `/kpis` and the pub/sub channel. The Redis outage test
runs last: it produces more events and restarts Redis.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.groups import (
    Feed,
    WorkerGroup,
    content,
    csat_lines,
    generated_lines,
    messages_seen,
    metric_total,
    newest_time,
    wait_for_stable_snapshot,
)
from tests.workers import WorkerProcess, assert_same_kpis, offline_snapshot, produce, worker_env

pytestmark = [pytest.mark.services, pytest.mark.slow]

TARGETS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "targets.example.toml"
PARTITIONS = 4


@dataclass
class Replayed:
    group: WorkerGroup
    feed: Feed
    bootstrap: str
    prefix: str
    lines: list[str] = field(default_factory=list)
    # Snapshots read from Redis while the second worker joined, and the one before it.
    before_join: dict[str, Any] = field(default_factory=dict)
    during_join: list[dict[str, Any]] = field(default_factory=list)
    owners_before_join: dict[int, dict[str, str]] = field(default_factory=dict)

    def produce(self, lines: list[str]) -> None:
        produce(self.bootstrap, self.prefix, lines)
        self.lines += lines

    def expected(self) -> dict[str, Any]:
        return offline_snapshot(self.lines, targets_file=TARGETS_FILE)

    def stable_snapshot(self) -> dict[str, Any]:
        return wait_for_stable_snapshot(
            self.feed.snapshot, len(self.lines), describe=self.group.log_tails
        )

    @property
    def workers(self) -> list[WorkerProcess]:
        return self.group.workers


@pytest.fixture(scope="module")
def replayed(kafka, redis_server, tmp_path_factory) -> Iterator[Replayed]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    env = worker_env(
        prefix,
        kafka.bootstrap_servers,
        redis_server.url,
        STREAM_KPIS_TARGETS_FILE=str(TARGETS_FILE),
    )
    group = WorkerGroup(env, tmp_path_factory.mktemp("feed"))
    feed = Feed(redis_server.url, prefix)
    state = Replayed(group, feed, kafka.bootstrap_servers, prefix)
    try:
        first, second = group.workers
        first.start().wait_ready()
        state.produce(generated_lines(seed=11, events=2000))
        state.before_join = state.stable_snapshot()
        state.owners_before_join = feed.partition_owners(PARTITIONS)
        state.during_join = _watch_while(feed, lambda: _join(second, feed))
        yield state
    finally:
        group.stop()
        feed.close()


def _join(worker: WorkerProcess, feed: Feed) -> None:
    """Start the worker and wait until it has published its share of the partitions."""
    worker.start().wait_ready()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        owners = feed.partition_owners(PARTITIONS)
        if len(owners) == PARTITIONS and len({o["worker"] for o in owners.values()}) == 2:
            time.sleep(1.5)  # a few more publish rounds after the move
            return
        time.sleep(0.2)
    raise AssertionError(f"the second worker published no partition:\n{worker.log_tail()}")


def _watch_while(feed: Feed, action: Any) -> list[dict[str, Any]]:
    """Every distinct snapshot stored in Redis while `action` runs."""
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            snapshot = feed.snapshot()
            if snapshot is not None and (not seen or snapshot != seen[-1]):
                seen.append(snapshot)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        action()
    finally:
        done.set()
        watcher.join(5)
    return seen


def test_snapshot_holds_while_a_worker_joins(replayed):
    """No new events while the partitions move: every snapshot has the same content."""
    before = content(replayed.before_join)
    assert messages_seen(replayed.before_join) == len(replayed.lines)
    assert len(replayed.during_join) >= 2, "the snapshot kept being refreshed"
    for snapshot in replayed.during_join:
        assert messages_seen(snapshot) == len(replayed.lines)
        # Equal up to float rounding: the new owner sums the same contributions in another
        # order when it rebuilds a partition's aggregates.
        assert_same_kpis(snapshot, before)
        assert snapshot["events"] == before["events"]
        assert snapshot["targets"] == before["targets"]

    # One worker wrote every partition before; after the move, each partition was written
    # in the new generation, by both workers between them.
    owners_before = replayed.owners_before_join
    assert sorted(owners_before) == list(range(PARTITIONS))
    assert len({owner["worker"] for owner in owners_before.values()}) == 1
    (old_generation,) = {int(owner["generation"]) for owner in owners_before.values()}
    owners = replayed.feed.partition_owners(PARTITIONS)
    (new_generation,) = {int(owner["generation"]) for owner in owners.values()}
    assert new_generation > old_generation
    assert len({owner["worker"] for owner in owners.values()}) == 2


def test_redis_http_and_compute_agree(replayed):
    expected = replayed.expected()
    stored = replayed.stable_snapshot()

    assert_same_kpis(stored, expected)
    assert stored["targets"] == expected["targets"]
    assert stored["success_rate"] == expected["success_rate"]
    for name in ("accepted", "duplicate", "invalid", "no_effect"):
        assert stored["events"][name] == expected["events"][name], name
    assert stored["schema_version"] == 1
    assert {"web", "app", "default", "all"} <= set(stored["windows"]["30d"])

    for worker in replayed.workers:
        served = worker.kpis()
        assert "degraded" not in served
        assert_same_kpis(served, expected)
        assert served["targets"] == expected["targets"]
        assert served["events"] == stored["events"]

    # Both workers own a share of the partitions, each written once, in one generation.
    owners = replayed.feed.partition_owners(PARTITIONS)
    assert sorted(owners) == list(range(PARTITIONS))
    assert len({owner["worker"] for owner in owners.values()}) == 2
    assert len({owner["generation"] for owner in owners.values()}) == 1


def test_one_programme_and_one_window(replayed):
    expected = replayed.expected()
    replayed.stable_snapshot()
    worker = replayed.workers[1]

    web = worker.get("/kpis/web").json()
    assert_same_kpis(web, _cut(expected, programs=["web"], windows=list(expected["windows"])))
    assert web["targets"] == [t for t in expected["targets"] if t["program"] == "web"]
    assert set(web["success_rate"]) <= {"web"}

    default_7d = worker.get("/kpis/default", window="7d").json()
    assert_same_kpis(default_7d, _cut(expected, programs=["default"], windows=["7d"]))
    assert default_7d["targets"] == [
        t for t in expected["targets"] if t["program"] == "default" and t["window"] == "7d"
    ]
    assert default_7d["targets"], "the example targets judge default's 7d session duration"
    assert default_7d["success_rate"] == {"default": expected["success_rate"]["default"]}

    all_30d = worker.get("/kpis", window="30d").json()
    assert_same_kpis(
        all_30d, _cut(expected, programs=["all", "web", "app", "default"], windows=["30d"])
    )
    assert {t["window"] for t in all_30d["targets"]} == {"30d"}


def test_errors_are_json_with_meaningful_codes(replayed):
    worker = replayed.workers[0]

    unknown = worker.get("/kpis/no-such-programme")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/json")
    assert "no-such-programme" in unknown.json()["error"]
    assert "web" in unknown.json()["programs"]

    for path in ("/kpis", "/kpis/web"):
        bad = worker.get(path, window="2h")
        assert bad.status_code == 400
        assert bad.json()["windows"] == ["1h", "24h", "7d", "30d", "all"]
        assert "2h" in bad.json()["error"]

    assert worker.get("/healthz").json()["status"] == "alive"
    ready = worker.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["broker"]["reachable"] is True
    assert ready.json()["status"] == "ok"


def test_subscriber_hears_of_new_events(replayed):
    before = replayed.stable_snapshot()
    later = newest_time(before) + 3600
    pubsub = replayed.feed.client.pubsub()
    pubsub.subscribe(f"{replayed.prefix}:updates")
    try:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        replayed.produce(csat_lines("news", later, 5))
        note = _next_note(pubsub, lambda note: note["as_of"] != before["as_of"])
    finally:
        pubsub.close()

    assert note["as_of"] == replayed.expected()["as_of"]
    assert note["key"] == f"{replayed.prefix}:snapshot"
    assert note["schema_version"] == 1
    after = replayed.stable_snapshot()
    assert_same_kpis(after, replayed.expected())
    assert after["windows"]["1h"]["web"]["csat"]["denominator"] == 5


def test_redis_outage_keeps_processing_and_the_snapshot_comes_back(replayed, redis_server):
    if not redis_server.managed:
        pytest.skip("REDIS_URL names a Redis this test cannot stop")
    before = replayed.stable_snapshot()
    later = newest_time(before) + 7200
    redis_server.stop()
    try:
        replayed.produce(csat_lines("outage", later, 40, program="app"))
        _wait_for_processed(replayed.workers, len(replayed.lines))

        for worker in replayed.workers:
            # A worker learns of the outage on its next publish: one interval plus, for a
            # write caught in flight, the socket timeout.
            served = _wait_for_degraded(worker)
            assert served["degraded"]["reason"] == "redis_unavailable"
            assert served["degraded"]["partitions_total"] == PARTITIONS
            ready = worker.get("/readyz")
            assert ready.status_code == 200, "processing goes on: the worker stays ready"
            assert ready.json()["degraded"] == ["redis"]
            assert ready.json()["checks"]["redis"]["status"] == "down"
        # Between them, the two workers' local views still cover every partition.
        local = [w.kpis() for w in replayed.workers]
        covered = sorted(p for served in local for p in served["degraded"]["partitions"])
        assert covered == list(range(PARTITIONS))
        assert sum(messages_seen(served) for served in local) == len(replayed.lines)
    finally:
        redis_server.start()

    # Redis came back empty: the workers write their partitions and the snapshot again.
    after = replayed.stable_snapshot()
    assert_same_kpis(after, replayed.expected())
    assert after["windows"]["1h"]["app"]["csat"]["denominator"] == 40
    for worker in replayed.workers:
        # Each worker serves the global snapshot again from its next publish on.
        assert "degraded" not in _wait_for_degraded(worker, expected=False)
        assert worker.get("/readyz").json()["degraded"] == []


def _cut(snapshot: dict[str, Any], *, programs: list[str], windows: list[str]) -> dict[str, Any]:
    """The expected snapshot restricted by hand to some programmes and windows."""
    return {
        "as_of": snapshot["as_of"],
        "windows": {w: {p: snapshot["windows"][w][p] for p in programs} for w in windows},
    }


def _next_note(pubsub: Any, wanted: Any, timeout_seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message and message["type"] == "message":
            note = json.loads(message["data"])
            if wanted(note):
                return dict(note)
    raise AssertionError(f"no notification on the updates channel in {timeout_seconds} s")


def _wait_for_degraded(
    worker: WorkerProcess, *, expected: bool = True, timeout_seconds: float = 30
) -> dict[str, Any]:
    """`GET /kpis` once the worker says it is degraded (or, expected False, no longer is)."""
    deadline = time.monotonic() + timeout_seconds
    served = worker.kpis()
    while ("degraded" in served) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        served = worker.kpis()
    assert ("degraded" in served) == expected, (
        f"after {timeout_seconds} s the worker's /kpis has degraded={served.get('degraded')!r}"
    )
    return served


def _wait_for_processed(workers: list[WorkerProcess], expected: int) -> None:
    """Wait until the workers' message counters (summed) account for every message."""
    deadline = time.monotonic() + 120
    total = 0.0
    while time.monotonic() < deadline:
        total = sum(
            metric_total(worker.get("/metrics").text, "stream_kpis_messages_total")
            for worker in workers
        )
        if total >= expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"the workers processed {total} of {expected} messages")
