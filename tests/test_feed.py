"""The Redis feed against a real Redis: fencing by generation, merging, notifications, outages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import redis

from stream_kpis.errors import FeedError
from stream_kpis.feed import RedisFeed, decode_partition, encode_partition, snapshot_digest
from stream_kpis.services._process import free_port

pytestmark = pytest.mark.services

PARTITIONS = 3


def counts(sessions: int, mrr: str) -> dict[str, Any]:
    return {
        "7d": {
            "all": {"sessions": sessions, "mrr_at_start": Decimal(mrr)},
            "web": {"sessions": sessions},
        }
    }


def payload(sessions: int, mrr: str, *, clock: float = 1000.0, accepted: int = 1) -> str:
    events = {"accepted": accepted, "duplicate": 0, "invalid": {"not_json": 1}}
    return encode_partition(counts(sessions, mrr), events, clock=clock, worker="w")


@pytest.fixture
async def feed(redis_server, unique) -> AsyncIterator[RedisFeed]:
    feed = RedisFeed(redis_server.url, prefix=unique, partitions=PARTITIONS, ttl_seconds=30)
    yield feed
    await feed.close()


@pytest.fixture
def client(redis_server) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


def test_a_partition_round_trips_with_exact_money():
    text = encode_partition(counts(3, "10.10"), {"accepted": 3}, clock=5.5, worker="w1")
    decoded, events, clock = decode_partition(text)
    assert decoded == counts(3, "10.10")
    assert decoded["7d"]["all"]["mrr_at_start"] == Decimal("10.10")
    assert (events, clock) == ({"accepted": 3}, 5.5)


async def test_a_complete_set_of_partitions_is_merged(feed):
    await feed.publish_partitions(
        {0: payload(1, "0.10", clock=10.0)}, generation=1, worker="a", clock=10.0
    )
    partial = await feed.read_partitions()
    assert partial.partitions == (0,)
    assert not partial.complete

    await feed.publish_partitions(
        {1: payload(2, "0.20", clock=30.0), 2: payload(4, "0.30", clock=20.0)},
        generation=1,
        worker="b",
        clock=30.0,
    )
    merged = await feed.read_partitions()
    assert merged.complete
    assert merged.clock == 30.0
    assert merged.counts["7d"]["all"] == {"sessions": 7, "mrr_at_start": Decimal("0.60")}
    assert merged.counts["7d"]["web"] == {"sessions": 7}
    assert merged.events["accepted"] == 3
    assert merged.events["invalid"] == {"not_json": 3}


async def test_an_older_generation_cannot_overwrite_a_newer_one(feed, client):
    await feed.publish_partitions({0: payload(5, "1")}, generation=7, worker="new", clock=1.0)
    refused = await feed.publish_partitions(
        {0: payload(9, "9"), 1: payload(1, "1")}, generation=6, worker="old", clock=1.0
    )
    assert refused == [0]
    assert client.hget(feed.partition_key(0), "worker") == "new"
    assert client.hget(feed.partition_key(1), "worker") == "old"
    merged = await feed.read_partitions()
    assert merged.counts["7d"]["all"]["sessions"] == 5 + 1

    # The same or a newer generation takes over.
    assert (
        await feed.publish_partitions({0: payload(2, "1")}, generation=8, worker="next", clock=1.0)
        == []
    )
    assert client.hget(feed.partition_key(0), "worker") == "next"


async def test_forgetting_a_lost_partition_spares_its_new_owner(feed, client):
    await feed.publish_partitions(
        {0: payload(1, "1"), 1: payload(1, "1")}, generation=3, worker="old", clock=1.0
    )
    # Generation 4: partition 1 moved and its new owner already wrote it.
    await feed.publish_partitions({1: payload(2, "1")}, generation=4, worker="new", clock=1.0)

    deleted = await feed.forget_partitions({0, 1}, generation=4)
    assert deleted == 1
    assert not client.exists(feed.partition_key(0))
    assert client.hget(feed.partition_key(1), "worker") == "new"


async def test_partition_state_and_the_clock_expire(feed, client):
    await feed.publish_partitions({0: payload(1, "1")}, generation=1, worker="w", clock=50.0)
    assert 0 < client.pttl(feed.partition_key(0)) <= 30_000
    assert 0 < client.pttl(feed.clock_key) <= 30_000


async def test_the_clock_only_moves_forward(feed):
    assert await feed.read_clock() is None
    await feed.publish_partitions({}, generation=1, worker="a", clock=200.5)
    await feed.publish_partitions({}, generation=1, worker="b", clock=100.0)
    assert await feed.read_clock() == 200.5


async def test_subscribers_hear_of_changed_content_only(feed, client):
    pubsub = client.pubsub()
    pubsub.subscribe(feed.updates_channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    snapshot = {
        "schema_version": 1,
        "as_of": "2026-01-01T00:00:00Z",
        "windows": {},
        "published_at": "2026-06-01T00:00:00Z",
    }

    assert await feed.publish_snapshot(snapshot) is True
    # Another worker writes the same content a moment later: stored, not announced.
    again = {**snapshot, "published_at": "2026-06-01T00:00:02Z"}
    assert await feed.publish_snapshot(again) is False
    assert json.loads(client.get(feed.snapshot_key))["published_at"] == "2026-06-01T00:00:02Z"
    changed = {**again, "as_of": "2026-01-01T00:01:00Z"}
    assert await feed.publish_snapshot(changed) is True

    notes = [await _message(pubsub), await _message(pubsub)]
    assert [note["as_of"] for note in notes] == ["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"]
    assert notes[0] == {
        "schema_version": 1,
        "as_of": "2026-01-01T00:00:00Z",
        "published_at": "2026-06-01T00:00:00Z",
        "key": feed.snapshot_key,
    }
    assert pubsub.get_message(timeout=0.5) is None
    assert await feed.read_snapshot() == changed
    assert client.get(feed.digest_key) == snapshot_digest(changed)
    pubsub.close()


async def test_redis_away_is_a_feed_error_and_is_reported():
    feed = RedisFeed(f"redis://127.0.0.1:{free_port()}/0", prefix="x", partitions=1)
    assert feed.up is None
    with pytest.raises(FeedError, match="Redis unavailable"):
        await feed.publish_partitions({0: payload(1, "1")}, generation=1, worker="w", clock=1.0)
    assert feed.up is False
    assert feed.last_error is not None and "Error" in feed.last_error
    assert feed.down_since is not None
    with pytest.raises(FeedError):
        await feed.read_snapshot()
    await feed.close()


async def test_the_feed_recovers_when_redis_returns(redis_server, unique):
    if not redis_server.managed:
        pytest.skip("REDIS_URL names a Redis this test cannot stop")
    feed = RedisFeed(redis_server.url, prefix=unique, partitions=1)
    try:
        await feed.publish_partitions({0: payload(1, "1")}, generation=1, worker="w", clock=1.0)
        redis_server.stop()
        try:
            with pytest.raises(FeedError):
                await feed.read_partitions()
            assert feed.up is False
        finally:
            redis_server.start()
        # Redis restarted empty (no persistence) and without our scripts: both come back.
        await feed.publish_partitions({0: payload(2, "1")}, generation=1, worker="w", clock=1.0)
        assert feed.up is True and feed.last_error is None
        assert (await feed.read_partitions()).counts["7d"]["all"]["sessions"] == 2
    finally:
        await feed.close()


async def _message(pubsub: Any) -> dict[str, Any]:
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            return dict(json.loads(message["data"]))
        await asyncio.sleep(0)
    raise AssertionError("no message on the updates channel")
