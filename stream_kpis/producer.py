"""Sending JSONL events to the input topics, keyed by subject (`produce` and `replay`).

Each non-blank line goes, as its original bytes, to the topic of its `type`: session events to
the sessions topic, subscription events and purchases to the subscriptions topic, survey
responses and referrals to the surveys topic (names from `Settings`). The key is the subject,
`customer_id` when present else `visitor_id`, or one fixed key for every message when asked (a
producer may key differently; the worker repartitions by subject). A line that is not JSON, not
an object, or has no known `type` is still sent, unchanged, to the *unrouted* topic, where the
worker dead-letters it: nothing is dropped silently. Blank lines are skipped and counted.

Messages are sent with acks=all and idempotence, batched by the client (linger), optionally
paced to a rate, and every acknowledgement is awaited before `produce` returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from stream_kpis.errors import ProduceError
from stream_kpis.events import TYPES_BY_TOPIC
from stream_kpis.kafka_connect import cannot_connect, connect_failures
from stream_kpis.settings import Settings

logger = logging.getLogger(__name__)

ROLE_OF_TYPE = {kind: role for role, kinds in TYPES_BY_TOPIC.items() for kind in kinds}
LINGER_MS = 20  # wait up to this long to fill a batch: throughput over latency
MAX_BATCH_BYTES = 256 * 1024
# Acknowledgements are awaited every so many messages, so pending futures stay bounded.
AWAIT_EVERY_MESSAGES = 10_000
# How long to wait for a destination topic's metadata before giving up.
TOPIC_WAIT_SECONDS = 30.0
# Sleeping for less than this is not worth a context switch when pacing to a rate.
_MIN_SLEEP_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class Routing:
    """Where messages go: topic per role, the topic for unroutable lines, an optional fixed key."""

    topics: dict[str, str]
    unrouted_topic: str
    fixed_key: bytes | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, unrouted_topic: str | None = None, key: str | None = None
    ) -> Routing:
        topics = dict(settings.input_topics)
        return cls(
            topics=topics,
            unrouted_topic=unrouted_topic or topics["sessions"],
            fixed_key=None if key is None else key.encode("utf-8"),
        )


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    routed: bool  # False: sent to the unrouted topic because it has no known type


def subject_key(event: dict[str, Any]) -> bytes | None:
    """The subject as key bytes: `customer_id` when present (not null), else `visitor_id`."""
    for field_name in ("customer_id", "visitor_id"):
        value = event.get(field_name)
        if value is not None:
            return value.encode("utf-8") if isinstance(value, str) and value else None
    return None


def route(raw: bytes, routing: Routing) -> Message | None:
    """The message for one line (without its line ending), or None for a blank line."""
    if not raw.strip():
        return None
    try:
        event = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        event = None

    key = routing.fixed_key
    if isinstance(event, dict):
        if key is None:
            key = subject_key(event)
        kind = event.get("type")
        role = ROLE_OF_TYPE.get(kind) if isinstance(kind, str) else None
        if role is not None:
            return Message(routing.topics[role], key, raw, routed=True)
    return Message(routing.unrouted_topic, key, raw, routed=False)


@dataclass(slots=True)
class ProduceSummary:
    """What `produce` did; `sent` counts acknowledged messages per topic."""

    sent: Counter[str] = field(default_factory=Counter)
    unrouted: int = 0
    blank_lines: int = 0
    elapsed_seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def lines(self) -> list[str]:
        rate = self.total / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0
        shown = [f"sent {self.total} messages in {self.elapsed_seconds:.1f} s ({rate:.0f}/s)"]
        shown += [f"  {topic}: {count}" for topic, count in sorted(self.sent.items())]
        if self.unrouted:
            shown.append(f"  unrouted (no valid JSON object with a known type): {self.unrouted}")
        if self.blank_lines:
            shown.append(f"  blank lines skipped: {self.blank_lines}")
        return shown


def kafka_client_config(settings: Settings) -> dict[str, Any]:
    """aiokafka connection arguments (brokers, TLS, SASL) from the settings."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        config["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
    if settings.security_protocol.startswith("SASL_"):
        password = settings.sasl_password
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = password.get_secret_value() if password else None
    return config


async def produce(
    lines: Iterable[bytes],
    *,
    settings: Settings,
    routing: Routing,
    rate_per_second: float | None = None,
    on_message: Callable[[Message], None] | None = None,
) -> ProduceSummary:
    """Send every line (see the module docstring) and wait for all acknowledgements.

    `on_message` is called as each message is handed to the client (for a progress bar).
    Raises ProduceError when Kafka cannot be reached or refuses messages.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    producer = AIOKafkaProducer(
        **kafka_client_config(settings),
        client_id="stream-kpis-producer",
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
    )
    with connect_failures() as causes:
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise ProduceError(cannot_connect(settings.bootstrap_servers, exc, causes)) from None

    summary = ProduceSummary()
    started = time.monotonic()
    try:
        await _check_topics(producer, routing)
        await _send_all(producer, lines, routing, rate_per_second, on_message, summary)
    except KafkaError as exc:
        raise ProduceError(
            f"Kafka refused messages after {summary.total} were sent: {exc}"
        ) from exc
    finally:
        await producer.stop()
    summary.elapsed_seconds = time.monotonic() - started
    logger.info("sent %d messages (%d unrouted)", summary.total, summary.unrouted)
    return summary


async def _check_topics(producer: Any, routing: Routing) -> None:
    """Fail early, naming the topic, when a destination topic does not exist.

    Asking for a topic's partitions also lets a broker that creates topics on first use do so
    before any message waits on it.
    """
    from aiokafka.errors import KafkaError

    for topic in sorted({*routing.topics.values(), routing.unrouted_topic}):
        try:
            await asyncio.wait_for(producer.partitions_for(topic), TOPIC_WAIT_SECONDS)
        except (KafkaError, TimeoutError):
            raise ProduceError(
                f"topic {topic!r} does not exist and the broker did not create it: create it "
                "(the worker creates its input topics) or set the topic names"
            ) from None


async def _send_all(
    producer: Any,
    lines: Iterable[bytes],
    routing: Routing,
    rate_per_second: float | None,
    on_message: Callable[[Message], None] | None,
    summary: ProduceSummary,
) -> None:
    pending: list[tuple[str, asyncio.Future[Any]]] = []
    async for message in _paced(lines, routing, rate_per_second, summary):
        future = await producer.send(message.topic, message.value, key=message.key)
        pending.append((message.topic, future))
        if not message.routed:
            summary.unrouted += 1
        if on_message is not None:
            on_message(message)
        if len(pending) >= AWAIT_EVERY_MESSAGES:
            await _acknowledged(pending, summary)
    await _acknowledged(pending, summary)


async def _paced(
    lines: Iterable[bytes],
    routing: Routing,
    rate_per_second: float | None,
    summary: ProduceSummary,
) -> AsyncIterator[Message]:
    """Routed messages, no faster than `rate_per_second` on average when it is set."""
    started = time.monotonic()
    count = 0
    for line in lines:
        message = route(line.rstrip(b"\r\n"), routing)
        if message is None:
            summary.blank_lines += 1
            continue
        if rate_per_second:
            ahead_seconds = started + count / rate_per_second - time.monotonic()
            if ahead_seconds > _MIN_SLEEP_SECONDS:
                await asyncio.sleep(ahead_seconds)
        count += 1
        yield message


async def _acknowledged(
    pending: list[tuple[str, asyncio.Future[Any]]], summary: ProduceSummary
) -> None:
    results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    for (topic, _), result in zip(pending, results, strict=True):
        if not isinstance(result, BaseException):
            summary.sent[topic] += 1
    pending.clear()
    if failures:
        raise ProduceError(
            f"{len(failures)} of {len(results)} messages were not acknowledged: {failures[0]!r}"
        )
