"""Workers that crash, move partitions, lose their broker or see every event twice still agree
with `compute` on the same events: nothing lost, nothing counted twice (KPI-SPEC section 6).

Each test runs real `stream-kpis worker` processes against the session broker and Redis, on
topics, a consumer group and Redis keys private to the test, and compares the final global
snapshot (the one GET /kpis serves, merged through Redis) with the offline snapshot of the
same lines, KPIs and outcome counts alike.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from stream_kpis.generate import GeneratorConfig, generate
from stream_kpis.partitions import partition_for_subject
from tests.workers import (
    WorkerProcess,
    assert_same_kpis,
    metric_samples,
    offline_snapshot,
    produce,
    subject_of,
    wait_for_counts,
    worker_env,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

OUTCOMES = ("accepted", "duplicate", "no_effect", "late", "invalid")
ROLES = ("sessions", "subscriptions", "surveys")
PARTITIONS = 4
# A killed worker's partitions move after this long; the broker's minimum is 6 s.
SESSION_TIMEOUT = {"STREAM_KPIS_BROKER_SESSION_TIMEOUT_SECONDS": "8"}


def stream(seed: int, events: int = 3000) -> list[str]:
    return generate(
        GeneratorConfig(
            seed=seed,
            events=events,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            days=40,
            duplicate_fraction=0.03,
            invalid_fraction=0.02,
            out_of_order_fraction=0.0,
        )
    )


def thirds(lines: list[str]) -> tuple[list[str], list[str], list[str]]:
    a, b = len(lines) // 3, 2 * len(lines) // 3
    return lines[:a], lines[a:b], lines[b:]


def assert_same_outcomes(got: dict, expected: dict) -> None:
    for name in OUTCOMES:
        assert got["events"][name] == expected["events"][name], name


def redelivered(worker: WorkerProcess) -> float:
    text = worker.get("/metrics").text
    return sum(value for _, value in metric_samples(text, "stream_kpis_redelivered_messages_total"))


def messages_seen(snapshot: dict) -> int:
    events = snapshot.get("events", {})
    return (
        events.get("accepted", 0)
        + events.get("duplicate", 0)
        + sum(events.get("invalid", {}).values())
    )


def wait_until_counting_beyond(worker: WorkerProcess, messages: int, timeout_seconds: float = 60):
    """Poll /kpis until the worker has published more than `messages` outcomes."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if messages_seen(worker.kpis()) > messages:
            return
        time.sleep(0.05)
    raise AssertionError(f"no progress beyond {messages} messages:\n{worker.log_tail()}")


def wait_for_stable_snapshot(worker: WorkerProcess, messages: int, timeout_seconds: float = 120):
    """Wait until /kpis accounts for every message and stays the same over a publish round
    (the workers of the group have agreed on one clock and published at it)."""
    deadline = time.monotonic() + timeout_seconds
    previous = None
    state = "no answer"
    while time.monotonic() < deadline:
        snapshot = worker.kpis()
        snapshot.pop("published_at", None)
        if messages_seen(snapshot) < messages or "degraded" in snapshot:
            previous = None
            state = f"{messages_seen(snapshot)} messages seen, degraded: {snapshot.get('degraded')}"
        elif snapshot == previous:
            return snapshot
        else:
            previous = snapshot
            state = f"every message seen, still changing (as of {snapshot.get('as_of')})"
        time.sleep(1.5)
    raise AssertionError(
        f"no stable snapshot of {messages} messages; last: {state}\n{worker.log_tail()}"
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ)


def input_offsets(bootstrap: str, prefix: str) -> tuple[dict, dict]:
    """The consumer group's committed offsets and the end offsets of the input partitions."""
    partitions = [TopicPartition(f"{prefix}-{r}", p) for r in ROLES for p in range(PARTITIONS)]

    async def read() -> tuple[dict, dict]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(f"{prefix}-app")
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
            await admin.close()
        return (
            {tp: committed[tp].offset if tp in committed else 0 for tp in partitions},
            dict(ends),
        )

    return asyncio.run(read())


def delete_input_records(bootstrap: str, prefix: str) -> None:
    """Delete every input message so far, as retention would while the workers are down."""
    partitions = [TopicPartition(f"{prefix}-{r}", p) for r in ROLES for p in range(PARTITIONS)]

    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await admin.start()
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
            await admin.delete_records({tp: RecordsToDelete(end) for tp, end in ends.items()})
        finally:
            await consumer.stop()
            await admin.close()

    asyncio.run(delete())


# Per-partition series every owned partition with data has, and ones it may have.
PARTITION_SERIES = ("stream_kpis_kpi_numerator", "stream_kpis_event_time_watermark_seconds")
OPTIONAL_PARTITION_SERIES = ("stream_kpis_consumer_lag_messages",)


def metric_partitions(worker: WorkerProcess) -> dict[str, set[str]]:
    """The partition labels each per-partition metric family shows on the worker."""
    text = worker.get("/metrics").text
    return {
        name: {labels["partition"] for labels, _ in metric_samples(text, name)}
        for name in PARTITION_SERIES + OPTIONAL_PARTITION_SERIES
    }


def owned_partitions(worker: WorkerProcess, timeout_seconds: float = 60) -> set[str]:
    """The partitions a ready worker owns, once no rebalance is running."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        response = worker.get("/readyz")
        if response.status_code == 200:
            return {str(p) for p in response.json()["partitions"]}
        time.sleep(0.3)
    raise AssertionError(f"worker not ready again:\n{worker.log_tail()}")


def assert_metrics_only_for_owned(worker: WorkerProcess) -> set[str]:
    owned = owned_partitions(worker)
    for name, shown in metric_partitions(worker).items():
        if name in OPTIONAL_PARTITION_SERIES:
            assert shown <= owned, (worker.log_path.name, name, shown, owned)
        else:
            assert shown == owned, (worker.log_path.name, name, shown, owned)
    return owned


def test_kill_9_mid_stream_then_restart(kafka, redis_server, unique, tmp_path):
    lines = stream(seed=11)
    first, second, third = thirds(lines)
    expected = offline_snapshot(lines)
    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url, **SESSION_TIMEOUT)

    worker = WorkerProcess(env, tmp_path, name="killed").start()
    try:
        worker.wait_ready()
        produce(kafka.bootstrap_servers, unique, first, key_mode="fixed")
        wait_for_counts(worker, len(first))
        produce(kafka.bootstrap_servers, unique, second, key_mode="fixed")
        wait_until_counting_beyond(worker, len(first))
        worker.kill()
    finally:
        worker.stop()

    restarted = WorkerProcess(env, tmp_path, name="restarted").start()
    try:
        restarted.wait_ready()
        produce(kafka.bootstrap_servers, unique, third, key_mode="fixed")
        got = wait_for_counts(restarted, len(lines))
        replayed = redelivered(restarted)
    finally:
        restarted.stop()

    print(f"messages read again after the kill and skipped: {replayed:.0f}")
    assert_same_kpis(got, expected)
    assert_same_outcomes(got, expected)


def test_a_worker_joins_and_one_leaves_mid_stream(kafka, redis_server, unique, tmp_path):
    lines = stream(seed=12)
    first, second, third = thirds(lines)
    expected = offline_snapshot(lines)
    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url, **SESSION_TIMEOUT)
    one, two, three = (WorkerProcess(env, tmp_path, name=f"worker{i}") for i in (1, 2, 3))

    try:
        for worker in (one, two):
            worker.start()
        for worker in (one, two):
            worker.wait_ready()
        produce(kafka.bootstrap_servers, unique, first, key_mode="fixed")
        wait_for_counts(two, len(first))

        # The third worker joins while events arrive: partitions move mid-stream.
        three.start()
        produce(kafka.bootstrap_servers, unique, second, key_mode="fixed")
        three.wait_ready()
        wait_for_stable_snapshot(two, len(first) + len(second))
        owned_by_three = [assert_metrics_only_for_owned(w) for w in (one, two, three)]

        # One leaves while events arrive.
        produce(kafka.bootstrap_servers, unique, third, key_mode="fixed")
        assert one.stop() == 0, one.log_tail()
        got = wait_for_stable_snapshot(two, len(lines))
        owned_by_two = [assert_metrics_only_for_owned(w) for w in (two, three)]
        numerators = [
            metric_samples(w.get("/metrics").text, "stream_kpis_kpi_numerator")
            for w in (two, three)
        ]
    finally:
        for worker in (one, two, three):
            worker.stop()

    assert_same_kpis(got, expected)
    assert_same_outcomes(got, expected)

    # Every partition counted on exactly one worker, before and after the leave.
    everything = {str(p) for p in range(PARTITIONS)}
    for owned in (owned_by_three, owned_by_two):
        assert set().union(*owned) == everything
        assert sum(len(parts) for parts in owned) == PARTITIONS

    # Summing a KPI numerator over workers and partitions gives the global numerator.
    for kpi, entry in got["windows"]["all"]["all"].items():
        total = sum(
            value
            for samples in numerators
            for labels, value in samples
            if labels["kpi"] == kpi and labels["window"] == "all" and labels["program"] == "all"
        )
        if entry.get("numerator") is not None:
            assert math.isclose(total, float(entry["numerator"]), rel_tol=1e-9), kpi


def test_broker_restart_mid_stream(kafka, redis_server, unique, tmp_path):
    lines = stream(seed=13)
    first, second, third = thirds(lines)
    expected = offline_snapshot(lines)
    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url, **SESSION_TIMEOUT)

    worker = WorkerProcess(env, tmp_path).start()
    try:
        worker.wait_ready()
        produce(kafka.bootstrap_servers, unique, first, key_mode="fixed")
        wait_for_counts(worker, len(first))
        produce(kafka.bootstrap_servers, unique, second, key_mode="fixed")

        assert worker.process is not None
        pid = worker.process.pid
        log_lines_before = len(worker.log_path.read_bytes().splitlines())
        kafka.stop()
        try:
            cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
            time.sleep(10)
            cpu_used, outage = cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
            log_lines = len(worker.log_path.read_bytes().splitlines()) - log_lines_before
            assert worker.process.poll() is None, worker.log_tail()
        finally:
            kafka.start()

        produce(kafka.bootstrap_servers, unique, third, key_mode="fixed")
        got = wait_for_counts(worker, len(lines))
        assert worker.process.pid == pid and worker.process.poll() is None
        worker.wait_ready()
    finally:
        worker.stop()

    print(f"while the broker was down: {cpu_used:.2f} s CPU and {log_lines} log lines")
    # A worker spinning on reconnects uses a whole core (it did, before kafka_backoff);
    # waiting uses next to nothing.
    assert cpu_used < 0.25 * outage
    # Unthrottled, the Kafka client logs two errors per reconnect try: thousands here.
    assert log_lines < 200
    assert_same_kpis(got, expected)
    assert_same_outcomes(got, expected)


def test_every_event_produced_twice_counts_once(kafka, redis_server, unique, tmp_path):
    lines = stream(seed=14, events=1500)
    doubled = [copy for line in lines for copy in (line, line)]
    once = offline_snapshot(lines)
    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url)

    worker = WorkerProcess(env, tmp_path).start()
    try:
        worker.wait_ready()
        produce(kafka.bootstrap_servers, unique, doubled, key_mode="fixed")
        got = wait_for_counts(worker, len(doubled))
    finally:
        worker.stop()

    # The KPIs and accepted events of each event sent once; every second copy a duplicate,
    # every invalid message counted each time it came.
    assert_same_kpis(got, once)
    assert got["events"]["accepted"] == once["events"]["accepted"]
    valid = once["events"]["accepted"] + once["events"]["duplicate"]
    assert got["events"]["duplicate"] == 2 * valid - once["events"]["accepted"]
    assert got["events"]["invalid"] == {k: 2 * v for k, v in once["events"]["invalid"].items()}


def test_sigterm_finishes_the_batch_and_a_restart_replays_nothing(
    kafka, redis_server, unique, tmp_path
):
    # Subjects of partitions 0 and 1 only: the other changelog partitions stay empty.
    lines = [
        line
        for line in stream(seed=15)
        if partition_for_subject(subject_of(line) or "", PARTITIONS) in (0, 1)
    ]
    half = len(lines) // 2
    expected = offline_snapshot(lines)
    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url)

    worker = WorkerProcess(env, tmp_path, name="stopped").start()
    try:
        worker.wait_ready()
        produce(kafka.bootstrap_servers, unique, lines[:half])
        wait_for_counts(worker, half)
        produce(kafka.bootstrap_servers, unique, lines[half:])
        wait_until_counting_beyond(worker, half)
        code = worker.stop(signal.SIGTERM)
    finally:
        worker.stop()
    assert code == 0, worker.log_tail()
    assert "Traceback" not in worker.log_path.read_text()
    committed, ends = input_offsets(kafka.bootstrap_servers, unique)
    print(f"committed at SIGTERM: {sum(committed.values())} of {sum(ends.values())} messages")

    restarted = WorkerProcess(env, tmp_path, name="restarted").start()
    try:
        restarted.wait_ready()
        got = wait_for_counts(restarted, len(lines))
        replayed = redelivered(restarted)
    finally:
        restarted.stop()

    assert replayed == 0  # every batch finished before the stop had its offsets committed
    assert_same_kpis(got, expected)
    assert_same_outcomes(got, expected)
    committed, ends = input_offsets(kafka.bootstrap_servers, unique)
    assert committed == ends


def test_restart_after_retention_passed(kafka, redis_server, unique, tmp_path):
    # Event ids are kept an hour: most of the recovered records' ids have expired. While the
    # worker is down, retention deletes input it never read: it resumes where the log starts.
    horizon = {"STREAM_KPIS_DEDUP_HORIZON_SECONDS": "3600"}
    lines = stream(seed=16)
    first, lost, third = thirds(lines)
    expected = offline_snapshot(first + third, dedup_horizon_seconds=3600)
    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url, **horizon)

    worker = WorkerProcess(env, tmp_path, name="before").start()
    try:
        worker.wait_ready()
        produce(kafka.bootstrap_servers, unique, first, key_mode="fixed")
        wait_for_counts(worker, len(first))
    finally:
        assert worker.stop() == 0

    produce(kafka.bootstrap_servers, unique, lost, key_mode="fixed")
    delete_input_records(kafka.bootstrap_servers, unique)

    restarted = WorkerProcess(env, tmp_path, name="after").start()
    try:
        restarted.wait_ready()
        assert messages_seen(wait_for_counts(restarted, len(first))) == len(first)
        produce(kafka.bootstrap_servers, unique, third, key_mode="fixed")
        got = wait_for_counts(restarted, len(first) + len(third))
    finally:
        restarted.stop()

    assert_same_kpis(got, expected)
    assert_same_outcomes(got, expected)


def test_messages_beyond_kafkas_default_size_are_forwarded_and_dead_lettered(
    kafka, redis_server, unique, tmp_path
):
    """A valid event just under the 1 MiB event limit, keyed away from its subject, needs a
    forwarded copy longer than Kafka's 1 MiB default; rejected values of 2 and 9 MiB need a
    dead-letter copy. The worker writes them all (the 9 MiB one cut to 8 MiB) and goes on."""
    from stream_kpis.worker import INTERNAL_VALUE_BYTES

    big_event = {
        "event_id": "big-1",
        "type": "session",
        "occurred_at": "2026-01-05T10:00:00Z",
        "visitor_id": "v-big",
        "program": "web",
        "session_id": "s-big",
        "duration_seconds": 120.0,
        "converted": False,
        "goal_reached": True,
        "note": "x" * 1_040_000,
    }
    big_line = json.dumps(big_event)
    lines = [*stream(seed=14, events=300), big_line]
    expected = offline_snapshot(lines)
    topic = f"{unique}-sessions"
    # A subject whose partition differs from the key's: the event is forwarded.
    key = next(
        k
        for k in (f"key-{i}".encode() for i in range(100))
        if partition_for_subject(k.decode(), PARTITIONS)
        != partition_for_subject("v-big", PARTITIONS)
    )

    async def produce_large() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(topic, PARTITIONS, 1, topic_configs={"max.message.bytes": "12582912"})]
            )
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers, acks="all", max_request_size=12_000_000
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, big_line.encode(), key=key)
            await producer.send_and_wait(topic, b"\xff" * 2_000_000, key=b"junk")
            await producer.send_and_wait(topic, b"{" * 9_000_000, key=b"junk")
        finally:
            await producer.stop()

    asyncio.run(produce_large())
    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url)
    worker = WorkerProcess(env, tmp_path, name="large").start()
    try:
        worker.wait_ready()
        produce(kafka.bootstrap_servers, unique, lines[:-1])
        got = wait_for_counts(worker, len(lines) + 2)
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        worker.stop()

    assert_same_kpis(got, expected)
    too_large = expected["events"]["invalid"].get("too_large", 0) + 2
    assert got["events"]["invalid"]["too_large"] == too_large
    assert got["events"]["accepted"] == expected["events"]["accepted"]

    async def dead_letters() -> list:
        consumer = AIOKafkaConsumer(
            f"{unique}-dead-letter",
            bootstrap_servers=kafka.bootstrap_servers,
            auto_offset_reset="earliest",
            fetch_max_bytes=32_000_000,
            max_partition_fetch_bytes=16_000_000,
        )
        await consumer.start()
        try:
            records = await consumer.getmany(timeout_ms=5000)
            return [r for batch in records.values() for r in batch]
        finally:
            await consumer.stop()

    sizes = {
        len(r.value): dict(r.headers).get("original_bytes")
        for r in asyncio.run(dead_letters())
        if dict(r.headers).get("reason") == b"too_large"
    }
    assert sizes == {2_000_000: None, INTERNAL_VALUE_BYTES: b"9000000"}
