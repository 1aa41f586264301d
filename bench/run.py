"""Benchmark stream-kpis against a plain Kafka consumer, in one run on one machine.

    .venv/bin/python bench/run.py --events 1000000

Phases (see bench/README.md): produce a seeded realistic mix; read it back with a raw aiokafka
consumer that only decodes the JSON (the baseline); run one worker over the same messages
until every one is in its KPIs and committed; latency at half the worker's rate; worker memory
with many distinct subjects; `stream-kpis compute` over the same events. The last line printed
is the machine-readable `RESULT ...` line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from phases import (
    Latency,
    Rate,
    latency,
    offline_compute,
    raw_consumer,
    same_kpis,
    wait_counted,
    worker_throughput,
)
from probes import Worker, worker_env
from streams import (
    HISTORY_DAYS,
    HISTORY_START,
    Producer,
    end_offsets,
    live_events,
    read_lines,
    realistic_events,
    route,
    subject_events,
)

from stream_kpis.services import create_topics, start_kafka, start_redis
from stream_kpis.settings import Settings

logger = logging.getLogger("bench")

ROLES = ("sessions", "subscriptions", "surveys")
LATENCY_WARMUP_SECONDS = 3.0
MEMORY_SUBJECTS = (100_000, 1_000_000)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    for chatty in ("httpx", "aiokafka"):  # a line per poll or per metadata change
        logging.getLogger(chatty).setLevel(logging.WARNING)
    work_dir = Path(tempfile.mkdtemp(prefix="stream-kpis-bench-"))
    logger.info("worker logs and outputs in %s", work_dir)
    with _services(args) as (bootstrap_servers, redis_url):
        bench = Bench(args, bootstrap_servers, redis_url, work_dir)
        results = asyncio.run(bench.run())
    _print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(_result_line(results), flush=True)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="messages in the throughput run (default 1,000,000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--bootstrap-servers", help="use this broker instead of a local one")
    parser.add_argument("--redis-url", help="use this Redis instead of a local one")
    parser.add_argument(
        "--partitions",
        type=int,
        default=Settings.model_fields["topic_partitions"].default,
        help="partitions per input topic (default: the worker's)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=30.0,
        help="how long the steady-rate latency phase sends (default 30)",
    )
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.events < 100:
        parser.error("--events must be at least 100")
    return args


@contextlib.contextmanager
def _services(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            logger.info("starting a local Kafka broker")
            bootstrap = stack.enter_context(start_kafka()).bootstrap_servers
        redis_url = args.redis_url
        if redis_url is None:
            redis_url = stack.enter_context(start_redis()).url
        yield bootstrap, redis_url


class Bench:
    def __init__(
        self, args: argparse.Namespace, bootstrap_servers: str, redis_url: str, work_dir: Path
    ) -> None:
        self.args = args
        self.bootstrap = bootstrap_servers
        self.redis_url = redis_url
        self.work_dir = work_dir
        self.partitions: int = args.partitions
        self.run_id = uuid.uuid4().hex[:8]
        self.results: dict[str, Any] = {"events": args.events, "partitions": self.partitions}

    async def run(self) -> dict[str, Any]:
        events_path = realistic_events(self.args.events, self.args.seed)
        messages = route(read_lines(events_path), self.partitions)
        prefix = f"bench-{self.run_id}-t"
        topics = await self._topics(prefix)
        started = time.monotonic()
        async with Producer(self.bootstrap, topics) as producer:
            await producer.send_all(messages)
        self.results["produce"] = _rate(Rate(len(messages), time.monotonic() - started))
        ends = await end_offsets(self.bootstrap, list(topics.values()), self.partitions)
        expected = len(messages)
        del messages

        logger.info("raw consumer over %d messages", expected)
        raw = await raw_consumer(self.bootstrap, list(topics.values()), expected)
        self.results["raw"] = _rate(raw)

        logger.info("one worker over the same %d messages", expected)
        snapshot, worker_rate = await self._throughput(prefix, expected, ends)
        self.results["worker"] = _rate(worker_rate)

        logger.info("offline compute over the same events")
        compute_out = self.work_dir / "compute.json"
        self.results["compute"] = _rate(offline_compute(events_path, compute_out))
        mismatches = same_kpis(snapshot, json.loads(compute_out.read_text()))
        self.results["worker_equals_compute"] = not mismatches
        for problem in mismatches[:10]:
            logger.warning("worker and compute differ: %s", problem)

        self.results["latency"] = await self._latency(worker_rate.per_second)
        self.results["memory"] = await self._memory()
        return self.results

    async def _topics(self, prefix: str) -> dict[str, str]:
        topics = {role: f"{prefix}-{role}" for role in ROLES}
        await create_topics(self.bootstrap, list(topics.values()), partitions=self.partitions)
        return topics

    def _worker(self, prefix: str, name: str) -> Worker:
        env = worker_env(prefix, self.bootstrap, self.redis_url, self.partitions)
        return Worker(env, self.work_dir, name).start()

    async def _throughput(
        self, prefix: str, expected: int, ends: dict[tuple[str, int], int]
    ) -> tuple[dict[str, Any], Rate]:
        worker = self._worker(prefix, "throughput")
        try:
            rate = await worker_throughput(
                worker, expected=expected, end_offsets=ends, bootstrap_servers=self.bootstrap
            )
            await asyncio.sleep(3)  # let a publish round merge every partition
            snapshot = worker.kpis()
        finally:
            worker.stop()
        return snapshot, rate

    async def _latency(self, worker_per_second: float) -> dict[str, Any]:
        rate = max(20.0, round(worker_per_second / 2))
        seconds = self.args.latency_seconds
        warmup = int(rate * LATENCY_WARMUP_SECONDS)
        total = warmup + int(rate * seconds)
        logger.info("latency: %d messages at %.0f/s (%d of warm-up)", total, rate, warmup)
        lines = live_events(total, self.args.seed + 1, LATENCY_WARMUP_SECONDS + seconds)

        prefix = f"bench-{self.run_id}-l"
        topics = await self._topics(prefix)
        worker = self._worker(prefix, "latency")
        try:
            worker.wait_ready()
            async with Producer(self.bootstrap, topics) as producer:
                measured: Latency = await latency(
                    worker,
                    lines,
                    rate_per_second=rate,
                    warmup=warmup,
                    producer=producer,
                    partitions=self.partitions,
                    redis_url=self.redis_url,
                    redis_prefix=prefix,
                )
        finally:
            worker.stop()
        return {
            "rate_per_second": rate,
            "messages": measured.measured,
            "metrics_p50_seconds": measured.quantile("metrics", 0.50),
            "metrics_p99_seconds": measured.quantile("metrics", 0.99),
            "redis_p50_seconds": measured.quantile("redis", 0.50),
            "redis_p99_seconds": measured.quantile("redis", 0.99),
            "p99_seconds": measured.p99_both(),
        }

    async def _memory(self) -> dict[str, Any]:
        small, large = (
            min(cap, max(1000, self.args.events * cap // 1_000_000)) for cap in MEMORY_SUBJECTS
        )
        prefix = f"bench-{self.run_id}-m"
        topics = await self._topics(prefix)
        end_seconds = HISTORY_START.timestamp() + HISTORY_DAYS * 86_400
        worker = self._worker(prefix, "memory")
        try:
            worker.wait_ready()
            await asyncio.sleep(1)
            idle_mb = worker.rss_mb()
            figures: dict[str, Any] = {"idle_rss_mb": idle_mb}
            sent = 0
            async with Producer(self.bootstrap, topics) as producer:
                for subjects in (small, large):
                    logger.info("memory: %d distinct subjects", subjects)
                    lines = subject_events(sent, subjects - sent, end_seconds=end_seconds)
                    started = time.monotonic()
                    await producer.send_all(route(lines, self.partitions))
                    del lines
                    done = await wait_counted(worker, subjects)
                    await asyncio.sleep(2)
                    figures[f"rss_mb_{subjects}"] = worker.rss_mb()
                    figures[f"per_second_{subjects}"] = (subjects - sent) / (done - started)
                    sent = subjects
        finally:
            worker.stop()
        small_mb, large_mb = figures[f"rss_mb_{small}"], figures[f"rss_mb_{large}"]
        figures["subjects"] = [small, large]
        figures["mb_per_100k_subjects"] = (large_mb - small_mb) / (large - small) * 100_000
        figures["mb_per_100k_first"] = (small_mb - idle_mb) / small * 100_000
        return figures


def _rate(rate: Rate) -> dict[str, Any]:
    return {
        "messages": rate.messages,
        "seconds": rate.seconds,
        "per_second": rate.per_second,
        "startup_seconds": rate.startup_seconds,
        **rate.extra,
    }


def _print_table(results: dict[str, Any]) -> None:
    raw, worker, compute = results["raw"], results["worker"], results["compute"]
    lat, mem = results["latency"], results["memory"]
    small, large = mem["subjects"]
    rows = [
        (
            "produce (bench producer)",
            f"{results['produce']['per_second']:,.0f} msg/s",
            f"{results['produce']['messages']:,} messages",
        ),
        (
            "raw aiokafka consumer + JSON decode",
            f"{raw['per_second']:,.0f} msg/s",
            f"{raw['seconds']:.1f} s",
        ),
        (
            "stream-kpis worker (1 process)",
            f"{worker['per_second']:,.0f} msg/s",
            f"{worker['seconds']:.1f} s to KPIs and commit; "
            f"start-up {worker['startup_seconds']:.1f} s",
        ),
        (
            "  worker / raw",
            f"{worker['per_second'] / raw['per_second']:.2f}",
            f"in /kpis after {worker['in_kpis_seconds']:.1f} s; peak RSS "
            f"{worker['peak_rss_mb']:,.0f} MB",
        ),
        (
            "CPU per message, raw / worker",
            f"{raw['cpu_us_per_message']:.0f} / {worker['cpu_us_per_message']:.0f} µs",
            f"CPU ratio raw/worker {raw['cpu_us_per_message'] / worker['cpu_us_per_message']:.3f}",
        ),
        (
            "stream-kpis compute (offline)",
            f"{compute['per_second']:,.0f} msg/s",
            f"{compute['seconds']:.1f} s; equals the worker: "
            f"{'yes' if results['worker_equals_compute'] else 'NO'}",
        ),
        (
            "latency to /metrics p50 / p99",
            f"{lat['metrics_p50_seconds']:.3f} / {lat['metrics_p99_seconds']:.3f} s",
            f"{lat['messages']:,} messages at {lat['rate_per_second']:,.0f}/s",
        ),
        (
            "latency to Redis p50 / p99",
            f"{lat['redis_p50_seconds']:.3f} / {lat['redis_p99_seconds']:.3f} s",
            "snapshot key's event counts",
        ),
        ("worker RSS idle", f"{mem['idle_rss_mb']:,.0f} MB", ""),
        (
            f"worker RSS, {small:,} subjects",
            f"{mem[f'rss_mb_{small}']:,.0f} MB",
            f"{mem['mb_per_100k_first']:.1f} MB per 100k over idle",
        ),
        (
            f"worker RSS, {large:,} subjects",
            f"{mem[f'rss_mb_{large}']:,.0f} MB",
            f"{mem['mb_per_100k_subjects']:.1f} MB per 100k from {small:,}",
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    print(f"{'phase':<{width}}  {'result':>{value_width}}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{value_width}}  {note}")


def _result_line(results: dict[str, Any]) -> str:
    raw_eps, worker_eps = results["raw"]["per_second"], results["worker"]["per_second"]
    return (
        f"RESULT worker_vs_raw_ratio={_fmt(worker_eps / raw_eps, 3)} "
        f"worker_eps={_fmt(worker_eps, 0)} raw_eps={_fmt(raw_eps, 0)} "
        f"p99_latency_s={_fmt(results['latency']['p99_seconds'], 3)} "
        f"rss_mb_per_100k_subjects={_fmt(results['memory']['mb_per_100k_subjects'], 1)}"
    )


def _fmt(value: float, digits: int) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}" if digits else str(round(value))


if __name__ == "__main__":
    sys.exit(main())
