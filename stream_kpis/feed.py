"""The Redis dashboard feed: per-partition state published by workers, one global snapshot.

Keys (with the configured prefix, default `stream-kpis`):

    <prefix>:partition:<n>   JSON of partition n's components and outcome counts, written by
                             the worker that owns it (expires if nobody refreshes it)
    <prefix>:snapshot        the global snapshot JSON (every window, programme, KPI, target)
    <prefix>:updates         pub/sub channel: a message {"as_of": ..., "schema_version": 1}
                             each time the global snapshot changes

Every worker publishes only the partitions it owns at that moment, then merges all partition
keys into the global snapshot. One key per partition means a partition is counted once, by its
latest owner, whichever worker merges.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from stream_kpis.aggregates import WindowCounts, merge_counts
from stream_kpis.kpis import MONEY_COMPONENTS
from stream_kpis.outcomes import merge_counts as merge_outcomes

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SOCKET_TIMEOUT_SECONDS = 2.0


def encode_partition(
    counts: WindowCounts, outcomes: Mapping[str, Any], *, clock: float, worker: str
) -> str:
    def plain(value: Any) -> Any:
        return str(value) if isinstance(value, Decimal) else value

    windows = {
        window: {scope: {k: plain(v) for k, v in comps.items()} for scope, comps in scopes.items()}
        for window, scopes in counts.items()
    }
    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "clock": clock,
            "worker": worker,
            "published_at": time.time(),
            "windows": windows,
            "events": outcomes,
        },
        separators=(",", ":"),
    )


def decode_partition(text: str | bytes) -> tuple[WindowCounts, dict[str, Any], float]:
    payload = json.loads(text)
    counts: WindowCounts = {
        window: {
            scope: {
                name: Decimal(value) if name in MONEY_COMPONENTS else value
                for name, value in comps.items()
            }
            for scope, comps in scopes.items()
        }
        for window, scopes in payload["windows"].items()
    }
    return counts, payload["events"], float(payload["clock"])


class RedisFeed:
    def __init__(self, url: str, *, prefix: str, partitions: int, ttl_seconds: int = 60) -> None:
        self._client = redis_asyncio.from_url(
            url,
            socket_timeout=_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=_SOCKET_TIMEOUT_SECONDS,
        )
        self.prefix = prefix
        self.partitions = partitions
        self.ttl_seconds = ttl_seconds
        self.up: bool | None = None
        self.last_error: str | None = None
        self._last_digest: str | None = None

    @property
    def snapshot_key(self) -> str:
        return f"{self.prefix}:snapshot"

    @property
    def updates_channel(self) -> str:
        return f"{self.prefix}:updates"

    def partition_key(self, partition: int) -> str:
        return f"{self.prefix}:partition:{partition}"

    async def publish_partitions(self, payloads: Mapping[int, str]) -> bool:
        """Write the owned partitions' payloads. False (and logged once) when Redis is down."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for partition, payload in payloads.items():
                    pipe.set(self.partition_key(partition), payload, ex=self.ttl_seconds)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            return False
        self._mark_up()
        return True

    async def read_partitions(self) -> tuple[WindowCounts, dict[str, Any], float | None, int]:
        """Merged components and outcome counts of every published partition."""
        keys = [self.partition_key(p) for p in range(self.partitions)]
        values = await self._client.mget(keys)
        parts, outcomes, clocks = [], [], []
        for value in values:
            if value is None:
                continue
            counts, events, clock = decode_partition(value)
            parts.append(counts)
            outcomes.append(events)
            clocks.append(clock)
        return merge_counts(parts), merge_outcomes(outcomes), max(clocks, default=None), len(parts)

    async def publish_snapshot(self, snapshot: dict[str, Any]) -> bool:
        """Store the global snapshot; notify subscribers when it changed. True if it changed."""
        text = json.dumps(snapshot, separators=(",", ":"), allow_nan=False)
        digest = hashlib.sha256(text.encode()).hexdigest()
        await self._client.set(self.snapshot_key, text)
        if digest == self._last_digest:
            return False
        self._last_digest = digest
        note = {"as_of": snapshot.get("as_of"), "schema_version": snapshot.get("schema_version")}
        await self._client.publish(self.updates_channel, json.dumps(note))
        return True

    async def close(self) -> None:
        await self._client.aclose()

    def _mark_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.up is not False:
            logger.warning("Redis unavailable, snapshots are not published: %s", self.last_error)
        self.up = False

    def _mark_up(self) -> None:
        if self.up is False:
            logger.info("Redis reachable again, publishing snapshots")
        self.up = True
        self.last_error = None
