"""Failed Kafka metadata updates pause before they report, doubling up to a limit."""

from __future__ import annotations

import pytest
from aiokafka.client import AIOKafkaClient

from stream_kpis import kafka_backoff


@pytest.fixture
def pauses(monkeypatch):
    """The pauses taken, recorded instead of slept; the client's method restored after."""
    recorded: list[float] = []

    async def record(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(kafka_backoff, "_sleep", record)
    monkeypatch.setattr(AIOKafkaClient, "_metadata_update", AIOKafkaClient._metadata_update)
    return recorded


def install_over_answers(monkeypatch, outcomes: list[bool]) -> None:
    """Install the backoff over a metadata update that answers these outcomes in turn."""
    answers = iter(outcomes)

    async def update(self, cluster_metadata, topics):
        return next(answers)

    monkeypatch.setattr(AIOKafkaClient, "_metadata_update", update)
    kafka_backoff.install()


def client(retry_backoff_ms: int = 100) -> AIOKafkaClient:
    return AIOKafkaClient(bootstrap_servers="127.0.0.1:9", retry_backoff_ms=retry_backoff_ms)


async def test_failures_in_a_row_pause_longer_and_a_success_resets(pauses, monkeypatch):
    install_over_answers(monkeypatch, [False] * 6 + [True, False])
    kafka = client()

    answers = [await kafka._metadata_update(kafka.cluster, set()) for _ in range(8)]

    assert answers == [False] * 6 + [True, False]
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.1]


async def test_installing_twice_wraps_once(pauses, monkeypatch):
    install_over_answers(monkeypatch, [False])
    kafka_backoff.install()
    kafka = client(retry_backoff_ms=250)

    assert await kafka._metadata_update(kafka.cluster, set()) is False
    assert pauses == [0.25]


async def test_a_real_failed_update_pauses(pauses):
    kafka_backoff.install()
    # No broker known and none to bootstrap from: the update fails at once.
    kafka = client()

    assert await kafka._metadata_update(kafka.cluster, set()) is False
    assert pauses == [0.1]
