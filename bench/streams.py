"""The event streams the benchmark sends, and a fast producer for them.

- `realistic_events`: the seeded synthetic mix of `stream_kpis.generate` (sessions whole and in
  parts, subscriptions, purchases, surveys, referrals, a few duplicates and invalid lines),
  cached on disk because generating a million lines takes a minute;
- `live_events`: the same mix over the next seconds of wall-clock time, for the latency phase;
- `subject_events`: one event for each of many distinct subjects, for the memory phase.

`produce` sends lines keyed by subject, each to its topic and to the partition Kafka's default
partitioner would pick, in producer batches (the per-message `send` of aiokafka is too slow to
load a broker with a million messages in reasonable time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_kpis.compute import TOPIC_OF_TYPE
from stream_kpis.generate import GeneratorConfig, generate
from stream_kpis.partitions import partition_for_subject
from stream_kpis.services.paths import cache_dir
from stream_kpis.timefmt import format_utc

logger = logging.getLogger(__name__)

HISTORY_START = datetime(2025, 1, 1, tzinfo=UTC)
HISTORY_DAYS = 90.0
DUPLICATE_FRACTION = 0.01
INVALID_FRACTION = 0.005
# Late deliveries stay well within the default grace period (300 s): offline equals streaming
# only when every session part arrives before its session is final (KPI-SPEC section 3), and
# the bench compares the two. With the generator's default, 600 s, a late `session_ended` can
# find its session already timed out in the worker (whose clock ran ahead meanwhile) but not
# in `compute`, which reads in event-time order.
MAX_DELAY_SECONDS = 60.0
_BATCH_BYTES = 512 * 1024


class _Routing(msgspec.Struct):
    type: Any = None
    customer_id: Any = None
    visitor_id: Any = None


_ROUTING = msgspec.json.Decoder(_Routing)


@dataclass(frozen=True, slots=True)
class Message:
    topic_role: str
    partition: int
    key: bytes
    value: bytes


def realistic_events(events: int, seed: int) -> Path:
    """A JSONL file of the seeded realistic mix, generated once and cached."""
    path = cache_dir() / "bench" / f"events-v2-{seed}-{events}.jsonl"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating %d events (seed %d) into %s", events, seed, path)
    lines = generate(
        GeneratorConfig(
            seed=seed,
            events=events,
            start=HISTORY_START,
            days=HISTORY_DAYS,
            duplicate_fraction=DUPLICATE_FRACTION,
            invalid_fraction=INVALID_FRACTION,
            max_delay_seconds=MAX_DELAY_SECONDS,
        )
    )
    partial = path.with_suffix(".partial")
    partial.write_text("".join(line + "\n" for line in lines))
    partial.rename(path)
    return path


def live_events(events: int, seed: int, seconds: float) -> list[str]:
    """The realistic mix with event times spread over the next `seconds` of wall clock."""
    return generate(
        GeneratorConfig(
            seed=seed,
            events=events,
            start=datetime.fromtimestamp(time.time(), UTC),
            days=seconds / 86_400,
        )
    )


def subject_events(first: int, count: int, *, end_seconds: float) -> list[str]:
    """One event for each of `count` subjects numbered from `first`, a mix of every topic.

    Six in ten subjects have a whole session, one starts a subscription, one buys once, one
    answers a CSAT survey and one has only a session start (an unfinished session). Times are
    spread over the 7 days before `end_seconds`.
    """
    lines = []
    span = 7 * 86_400.0
    for n in range(first, first + count):
        at = format_utc(round(end_seconds - span + span * (n % 100_003) / 100_003, 3))
        head = f'"event_id":"m{n}-1","occurred_at":"{at}","program":"{"web" if n % 3 else "app"}"'
        kind = n % 10
        if kind < 6:
            body = (
                f'"type":"session","visitor_id":"m{n}","session_id":"s1",'
                f'"duration_seconds":{n % 900}'
            )
        elif kind == 6:
            body = f'"type":"subscription_started","customer_id":"m{n}","mrr":"19.90"'
        elif kind == 7:
            body = f'"type":"purchase","customer_id":"m{n}","order_id":"o1","amount":"30.05"'
        elif kind == 8:
            body = (
                f'"type":"survey_response","visitor_id":"m{n}","survey":"csat","score":{1 + n % 5}'
            )
        else:
            body = f'"type":"session_started","visitor_id":"m{n}","session_id":"s1"'
        lines.append("{" + head + "," + body + "}")
    return lines


def route(lines: Sequence[str] | Sequence[bytes], partitions: int) -> list[Message]:
    """Each line's topic role and partition, keyed by subject (like `stream-kpis produce`)."""
    messages = []
    for line in lines:
        value = line.encode() if isinstance(line, str) else line
        try:
            fields = _ROUTING.decode(value)
        except msgspec.DecodeError:
            fields = _Routing()
        kind = fields.type if isinstance(fields.type, str) else None
        subject = fields.customer_id or fields.visitor_id
        subject = subject if isinstance(subject, str) else ""
        messages.append(
            Message(
                topic_role=TOPIC_OF_TYPE.get(kind, "sessions") if kind else "sessions",
                partition=partition_for_subject(subject, partitions),
                key=subject.encode(),
                value=value,
            )
        )
    return messages


def read_lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


class Producer:
    """Sends routed messages to the topics named by role, in batches or one at a time."""

    def __init__(self, bootstrap_servers: str, topics: dict[str, str]) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_batch_size=_BATCH_BYTES,
        )
        self._topics = topics

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send_all(self, messages: Sequence[Message]) -> None:
        """Send every message, in order within each partition, and wait for the acks."""
        open_batches: dict[tuple[str, int], Any] = {}
        pending: list[asyncio.Future[Any]] = []
        for message in messages:
            target = (self._topics[message.topic_role], message.partition)
            batch = open_batches.get(target)
            if batch is None:
                batch = open_batches[target] = self._producer.create_batch()
            if batch.append(key=message.key, value=message.value, timestamp=None) is None:
                pending.append(await self._send(batch, target))
                batch = open_batches[target] = self._producer.create_batch()
                batch.append(key=message.key, value=message.value, timestamp=None)
        for target, batch in open_batches.items():
            if batch.record_count():
                pending.append(await self._send(batch, target))
        await asyncio.gather(*pending)

    async def send_one(self, message: Message) -> None:
        """Hand one message to the producer now (the latency phase paces them one by one)."""
        await self._producer.send(
            self._topics[message.topic_role],
            message.value,
            key=message.key,
            partition=message.partition,
        )

    async def flush(self) -> None:
        await self._producer.flush()

    async def _send(self, batch: Any, target: tuple[str, int]) -> asyncio.Future[Any]:
        batch.close()
        future: asyncio.Future[Any] = await self._producer.send_batch(
            batch, target[0], partition=target[1]
        )
        return future


async def end_offsets(
    bootstrap_servers: str, topics: Sequence[str], partitions: int
) -> dict[tuple[str, int], int]:
    """The next offset of every partition of `topics`: where a consumer that read all stops."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await consumer.start()
    try:
        wanted = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
        ends = await consumer.end_offsets(wanted)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
