"""The phases of one benchmark run; each returns plain figures for the table.

Rates are messages per second from the first message processed to the last one done, so that
process start-up (Faust boot, group join, table recovery) is reported apart from throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import redis.asyncio as redis_asyncio
from aiokafka import AIOKafkaConsumer
from probes import (
    BenchError,
    Worker,
    all_committed,
    committed_offsets,
    metrics_message_count,
    snapshot_message_count,
)
from streams import Message, Producer, route

logger = logging.getLogger(__name__)

_START_POLL_SECONDS = 0.05
_PROGRESS_POLL_SECONDS = 0.5
_DONE_POLL_SECONDS = 0.1
# /metrics derives every KPI when scraped, so polling it fast would slow the worker it measures;
# Redis is read from the bench's side only.
_LATENCY_METRICS_POLL_SECONDS = 0.2
_LATENCY_POLL_SECONDS = 0.05
_LATENCY_TICK_SECONDS = 0.005


@dataclass(slots=True)
class Rate:
    messages: int
    seconds: float
    startup_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("nan")


# -- 2. the raw consumer ----------------------------------------------------------------------


async def raw_consumer(bootstrap_servers: str, topics: Sequence[str], expected: int) -> Rate:
    """A plain aiokafka consumer that reads every message and decodes its JSON, nothing else."""
    decoder = msgspec.json.Decoder()
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    launched = time.monotonic()
    await consumer.start()
    count = 0
    first: float | None = None
    first_cpu = 0.0
    try:
        while count < expected:
            batches = await consumer.getmany(timeout_ms=1000)
            if first is None and batches:
                first, first_cpu = time.monotonic(), time.process_time()
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(msgspec.DecodeError):
                        decoder.decode(record.value)
                    count += 1
        done, cpu = time.monotonic(), time.process_time() - first_cpu
    finally:
        await consumer.stop()
    assert first is not None
    return Rate(
        count,
        done - first,
        startup_seconds=first - launched,
        extra={"cpu_us_per_message": cpu * 1e6 / count},
    )


# -- 3. the worker ------------------------------------------------------------------------------


async def worker_throughput(
    worker: Worker,
    *,
    expected: int,
    end_offsets: Mapping[tuple[str, int], int],
    bootstrap_servers: str,
) -> Rate:
    """From the worker's first message until every message is in /kpis and committed.

    The worker is started on topics that already hold every message. Its start is the last
    /metrics poll that still counted nothing (polled every 50 ms), so the rate errs low. Then
    progress is read from /kpis, which costs the worker little (a scrape of /metrics derives
    every KPI of every partition).
    """
    peak_rss_mb = 0.0
    before_first = time.monotonic()
    cpu_at_start = worker.cpu_seconds()
    count = 0
    while count == 0:
        worker.check_alive()
        poll_at, cpu_at_poll = time.monotonic(), worker.cpu_seconds()
        try:
            count = worker.messages_counted()
        except httpx.HTTPError:
            count = 0
        if count == 0:
            before_first, cpu_at_start = poll_at, cpu_at_poll
            await asyncio.sleep(_START_POLL_SECONDS)

    while count < expected:
        worker.check_alive()
        await asyncio.sleep(_PROGRESS_POLL_SECONDS)
        count = snapshot_message_count(worker.kpis())
        peak_rss_mb = max(peak_rss_mb, worker.rss_mb())
    processed, cpu_used = time.monotonic(), worker.cpu_seconds() - cpu_at_start

    deadline = time.monotonic() + 120
    while not all_committed(await committed_offsets(bootstrap_servers, worker.app_id), end_offsets):
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"offsets not committed in 120 s:\n{worker.log_tail()}")
        await asyncio.sleep(_DONE_POLL_SECONDS)
    done = time.monotonic()
    peak_rss_mb = max(peak_rss_mb, worker.rss_mb())
    return Rate(
        expected,
        done - before_first,
        startup_seconds=before_first - worker.started_at,
        extra={
            "in_kpis_seconds": processed - before_first,
            "cpu_us_per_message": cpu_used * 1e6 / expected,
            "rss_mb": worker.rss_mb(),
            "peak_rss_mb": peak_rss_mb,
        },
    )


# -- 4. latency ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Latency:
    rate_per_second: float
    measured: int
    metrics_seconds: list[float]
    redis_seconds: list[float]

    def quantile(self, which: str, q: float) -> float:
        values = sorted(self.metrics_seconds if which == "metrics" else self.redis_seconds)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))]

    @property
    def both_seconds(self) -> list[float]:
        return [max(a, b) for a, b in zip(self.metrics_seconds, self.redis_seconds, strict=True)]

    def p99_both(self) -> float:
        values = sorted(self.both_seconds)
        return values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan")


async def latency(
    worker: Worker,
    lines: Sequence[str],
    *,
    rate_per_second: float,
    warmup: int,
    producer: Producer,
    partitions: int,
    redis_url: str,
    redis_prefix: str,
) -> Latency:
    """Send `lines` at a steady rate and time each until /metrics and Redis count it.

    The k-th message sent counts as visible once a counter reaches k: messages are sent in
    order and a worker applies each partition in order, so this is the latency of the k-th
    message to within the interleaving of partitions. /metrics is polled every 200 ms and
    Redis every 50 ms; a poll's time is when its answer arrived, so latencies err high by up
    to one poll.
    """
    messages = route(lines, partitions)
    sent_at: list[float] = []
    metrics_samples: list[tuple[float, int]] = []
    redis_samples: list[tuple[float, int]] = []
    total = len(messages)
    stop = asyncio.Event()

    async def poll_metrics() -> None:
        async with httpx.AsyncClient(base_url=worker.url, timeout=5) as client:
            while not stop.is_set():
                response = await client.get("/metrics")
                metrics_samples.append((time.monotonic(), metrics_message_count(response.text)))
                await asyncio.sleep(_LATENCY_METRICS_POLL_SECONDS)

    async def poll_redis() -> None:
        client = redis_asyncio.Redis.from_url(redis_url)
        try:
            while not stop.is_set():
                raw = await client.get(f"{redis_prefix}:snapshot")
                count = snapshot_message_count(msgspec.json.decode(raw)) if raw else 0
                redis_samples.append((time.monotonic(), count))
                await asyncio.sleep(_LATENCY_POLL_SECONDS)
        finally:
            await client.aclose()

    pollers = [asyncio.create_task(poll_metrics()), asyncio.create_task(poll_redis())]
    try:
        await _send_paced(producer, messages, rate_per_second, sent_at)
        deadline = time.monotonic() + 60
        while not _reached(metrics_samples, total) or not _reached(redis_samples, total):
            worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"latency messages not all visible in 60 s:\n{worker.log_tail()}")
            await asyncio.sleep(_LATENCY_POLL_SECONDS)
    finally:
        stop.set()
        await asyncio.gather(*pollers, return_exceptions=True)

    return Latency(
        rate_per_second=rate_per_second,
        measured=total - warmup,
        metrics_seconds=_latencies(sent_at, metrics_samples, warmup),
        redis_seconds=_latencies(sent_at, redis_samples, warmup),
    )


async def _send_paced(
    producer: Producer, messages: Sequence[Message], rate: float, sent_at: list[float]
) -> None:
    """Message k goes out at start + k / rate; due messages go out together every 5 ms."""
    start = time.monotonic()
    index = 0
    while index < len(messages):
        now = time.monotonic()
        due = min(len(messages), int((now - start) * rate) + 1)
        while index < due:
            await producer.send_one(messages[index])
            sent_at.append(time.monotonic())
            index += 1
        await asyncio.sleep(_LATENCY_TICK_SECONDS)
    await producer.flush()


def _reached(samples: list[tuple[float, int]], total: int) -> bool:
    return bool(samples) and samples[-1][1] >= total


def _latencies(
    sent_at: Sequence[float], samples: Sequence[tuple[float, int]], skip: int
) -> list[float]:
    """For each message k >= skip: the first sample counting k + 1 messages, minus its send."""
    result = []
    position = 0
    for k in range(skip, len(sent_at)):
        while position < len(samples) and samples[position][1] < k + 1:
            position += 1
        if position == len(samples):
            break
        result.append(max(0.0, samples[position][0] - sent_at[k]))
    return result


# -- 5. memory ----------------------------------------------------------------------------------


async def wait_counted(worker: Worker, expected: int, timeout_seconds: float = 900) -> float:
    """Poll /metrics until the worker counted `expected` messages; returns when it did."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        worker.check_alive()
        try:
            if worker.messages_counted() >= expected:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{expected} messages not counted in {timeout_seconds:.0f} s")
        await asyncio.sleep(_PROGRESS_POLL_SECONDS)


# -- 6. offline compute -------------------------------------------------------------------------


def offline_compute(events_path: Path, out_path: Path) -> Rate:
    """`stream-kpis compute` over the same events, as a subprocess; the whole run is timed."""
    started = time.monotonic()
    with out_path.open("wb") as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "stream_kpis",
                "--log-level",
                "WARNING",
                "compute",
                str(events_path),
            ],
            stdout=out,
            check=True,
        )
    lines = sum(1 for line in events_path.open("rb") if line.strip())
    return Rate(lines, time.monotonic() - started)


def same_kpis(got: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Where two snapshots' KPI values differ (1e-9 relative); empty when they agree."""
    problems = []
    if got.get("as_of") != expected.get("as_of"):
        problems.append(f"as_of {got.get('as_of')} != {expected.get('as_of')}")
    for window, scopes in expected.get("windows", {}).items():
        for scope, kpis in scopes.items():
            for kpi, entry in kpis.items():
                mine = got.get("windows", {}).get(window, {}).get(scope, {}).get(kpi)
                if mine is None or not _close(mine.get("value"), entry.get("value")):
                    problems.append(f"{window}/{scope}/{kpi}: {mine} != {entry}")
    return problems


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return bool(abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b)))
