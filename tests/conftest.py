"""Shared fixtures: the real local services, and names private to each test.

The services (a Kafka broker, Redis, Prometheus) start once per test session on free loopback
ports, from `stream_kpis.services`. When one cannot start, a test that needs it is skipped with
the reason, except under CI (`CI=true`), where it fails: CI must never pass by skipping.

A test that stops or restarts a shared service (fault tests) starts it again before it ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from stream_kpis.errors import ServiceError
from stream_kpis.services import (
    KafkaBroker,
    PrometheusServer,
    RedisServer,
    start_kafka,
    start_prometheus,
    start_redis,
)
from stream_kpis.services import create_topics as create_kafka_topics

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(what: str, exc: ServiceError) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{what} could not start under CI: {exc}", pytrace=False)
    pytest.skip(f"{what} is not available: {exc}")


def _start(what: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except ServiceError as exc:
        _unavailable(what, exc)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    """A single-node Kafka broker (KRaft) shared by the session; `.bootstrap_servers`."""
    broker = _start("the Kafka broker", start_kafka)
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def kafka_factory() -> Iterator[Callable[..., KafkaBroker]]:
    """Start extra brokers (`scram_users=...`, a `data_dir` to keep); all closed at the end."""
    started: list[KafkaBroker] = []

    def factory(**options: Any) -> KafkaBroker:
        broker = _start("a Kafka broker", lambda: start_kafka(**options))
        started.append(broker)
        return broker

    yield factory
    for broker in started:
        broker.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server shared by the session (or the one `REDIS_URL` names); `.url`."""
    server = _start("Redis", start_redis)
    yield server
    server.close()


@pytest.fixture(scope="session")
def prometheus_factory() -> Iterator[Callable[..., PrometheusServer]]:
    """Start a Prometheus with a config (a Path, or YAML text where `{self}` is its address)."""
    started: list[PrometheusServer] = []

    def factory(config: Path | str | None = None) -> PrometheusServer:
        server = _start("Prometheus", lambda: start_prometheus(config))
        started.append(server)
        return server

    yield factory
    for server in started:
        server.close()


class Unique(str):
    """A short name prefix private to one test: `unique` is the prefix, `unique("x")` is
    `<prefix>-x`. Use it for topics, consumer groups, app ids and Redis key prefixes."""

    def __call__(self, name: str) -> str:
        return f"{self}-{name}"


@pytest.fixture
def unique() -> Unique:
    return Unique(f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def create_topics(kafka: KafkaBroker) -> Callable[..., Any]:
    """`await create_topics(names, partitions=4)` makes topics on the session broker and
    returns once every partition has a leader."""

    async def create(names: list[str], partitions: int = 4) -> list[str]:
        await create_kafka_topics(kafka.bootstrap_servers, names, partitions=partitions)
        return names

    return create
