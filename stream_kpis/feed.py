"""The Redis dashboard feed: per-partition state published by workers, one global snapshot.

Keys (with the configured prefix, default `stream-kpis`; docs/feed.md is the user's guide):

    <prefix>:snapshot          the global snapshot JSON (every window, programme, KPI, target),
                               written only when every partition is accounted for
    <prefix>:snapshot:digest   SHA-256 of the snapshot without `published_at`: tells a changed
                               snapshot from a refreshed one, whichever worker wrote it
    <prefix>:updates           pub/sub channel: one small JSON message each time the snapshot's
                               content changes (see `notification`)
    <prefix>:partition:<n>     internal: a hash with partition n's components and outcome counts
                               (`payload`), the consumer-group `generation` and the `worker`
                               that wrote it; expires unless its owner refreshes it
    <prefix>:clock             internal: the newest clock any partition was published at; on the
                               event-time clock every worker reads its partitions at it, so
                               that all partitions of a snapshot are read at one time

Partition state is fenced by the consumer-group generation: a write or delete from an older
generation than the stored one is refused, so a worker that lost a partition (a zombie that
has not noticed yet, or a late write racing a rebalance) can never overwrite its new owner's
state. A worker deletes the keys of partitions it lost, and the snapshot is merged only from a
complete set of partitions, so a partition is counted exactly once, by its current owner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from stream_kpis.aggregates import WindowCounts, merge_counts
from stream_kpis.errors import FeedError
from stream_kpis.kpis import MONEY_COMPONENTS
from stream_kpis.outcomes import merge_counts as merge_outcomes
from stream_kpis.snapshot import SCHEMA_VERSION

logger = logging.getLogger(__name__)

SOCKET_TIMEOUT_SECONDS = 2.0
DEFAULT_TTL_SECONDS = 60

# KEYS: the clock key, then partition keys. ARGV: generation, ttl in ms, worker, clock, then
# one payload per partition key. Returns the 1-based indexes of the partitions refused because
# a newer generation holds them. The clock key keeps the newest clock and expires with the
# partitions, so a later replay of older history under the same prefix starts afresh.
_WRITE_PARTITIONS = """
local generation = tonumber(ARGV[1])
local refused = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local stored = tonumber(redis.call('HGET', key, 'generation'))
  if stored ~= nil and stored > generation then
    table.insert(refused, i - 1)
  else
    redis.call('HSET', key, 'generation', ARGV[1], 'worker', ARGV[3], 'payload', ARGV[3 + i])
    redis.call('PEXPIRE', key, ARGV[2])
  end
end
local clock = tonumber(redis.call('GET', KEYS[1]))
if clock == nil or tonumber(ARGV[4]) > clock then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return refused
"""

# KEYS: partition keys. ARGV: generation. Deletes what an older generation wrote.
_FORGET_PARTITIONS = """
local generation = tonumber(ARGV[1])
local deleted = 0
for _, key in ipairs(KEYS) do
  local stored = tonumber(redis.call('HGET', key, 'generation'))
  if stored ~= nil and stored < generation then
    deleted = deleted + redis.call('DEL', key)
  end
end
return deleted
"""

# KEYS: snapshot, digest. ARGV: snapshot JSON, its digest, channel, notification.
# The snapshot is always stored (its `published_at` moves); subscribers hear of it only when
# the digest differs from the stored one, so two workers merging the same state notify once.
_WRITE_SNAPSHOT = """
redis.call('SET', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


def encode_partition(
    counts: WindowCounts, outcomes: Mapping[str, Any], *, clock: float, worker: str
) -> str:
    """One partition's components (money as decimal strings) and outcome counts, as JSON."""

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


@dataclass(frozen=True, slots=True)
class MergedPartitions:
    """The partitions found in Redis, merged: components, outcome counts and the newest clock."""

    counts: WindowCounts
    events: dict[str, Any]
    clock: float | None
    partitions: tuple[int, ...]
    total: int

    @property
    def complete(self) -> bool:
        return len(self.partitions) == self.total


def snapshot_digest(snapshot: Mapping[str, Any]) -> str:
    """The digest of a snapshot's content: everything but `published_at`."""
    content = {key: value for key, value in snapshot.items() if key != "published_at"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def notification(snapshot: Mapping[str, Any], *, snapshot_key: str) -> dict[str, Any]:
    """The pub/sub message announcing a changed snapshot (small: subscribers GET the key)."""
    return {
        "schema_version": snapshot.get("schema_version"),
        "as_of": snapshot.get("as_of"),
        "published_at": snapshot.get("published_at"),
        "key": snapshot_key,
    }


class RedisFeed:
    """Reads and writes the feed's keys. Every Redis failure is raised as `FeedError`.

    `up` is None before the first attempt, then whether the last one succeeded; `last_error`
    and `down_since` (wall clock) describe the current outage.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        partitions: int,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        self._client = redis_asyncio.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        )
        self.prefix = prefix
        self.partitions = partitions
        self.ttl_seconds = ttl_seconds
        self.up: bool | None = None
        self.last_error: str | None = None
        self.down_since: float | None = None
        self._write_partitions = self._client.register_script(_WRITE_PARTITIONS)
        self._forget_partitions = self._client.register_script(_FORGET_PARTITIONS)
        self._write_snapshot = self._client.register_script(_WRITE_SNAPSHOT)

    @property
    def snapshot_key(self) -> str:
        return f"{self.prefix}:snapshot"

    @property
    def digest_key(self) -> str:
        return f"{self.prefix}:snapshot:digest"

    @property
    def updates_channel(self) -> str:
        return f"{self.prefix}:updates"

    @property
    def clock_key(self) -> str:
        return f"{self.prefix}:clock"

    def partition_key(self, partition: int) -> str:
        return f"{self.prefix}:partition:{partition}"

    async def publish_partitions(
        self, payloads: Mapping[int, str], *, generation: int, worker: str, clock: float
    ) -> list[int]:
        """Write the owned partitions' payloads, read at `clock`; return the partitions
        refused because a newer generation holds them."""
        order = sorted(payloads)
        refused = await self._call(
            self._write_partitions(
                keys=[self.clock_key, *(self.partition_key(p) for p in order)],
                args=[
                    generation,
                    int(self.ttl_seconds * 1000),
                    worker,
                    repr(float(clock)),
                    *(payloads[p] for p in order),
                ],
            )
        )
        return [order[int(index) - 1] for index in refused]

    async def read_clock(self) -> float | None:
        """The newest clock any partition was published at (None when there is none)."""
        value = await self._call(self._client.get(self.clock_key))
        return None if value is None else float(value)

    async def forget_partitions(self, partitions: Collection[int], *, generation: int) -> int:
        """Delete lost partitions' state if an older generation wrote it; return how many."""
        if not partitions:
            return 0
        keys = [self.partition_key(p) for p in sorted(partitions)]
        return int(await self._call(self._forget_partitions(keys=keys, args=[generation])))

    async def read_partitions(self) -> MergedPartitions:
        """Merge every partition found in Redis."""
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in range(self.partitions):
                pipe.hget(self.partition_key(partition), "payload")
            values = await self._call(pipe.execute())

        parts, outcomes, clocks, present = [], [], [], []
        for partition, value in enumerate(values):
            if value is None:
                continue
            counts, events, clock = decode_partition(value)
            parts.append(counts)
            outcomes.append(events)
            clocks.append(clock)
            present.append(partition)
        return MergedPartitions(
            counts=merge_counts(parts),
            events=merge_outcomes(outcomes),
            clock=max(clocks, default=None),
            partitions=tuple(present),
            total=self.partitions,
        )

    async def publish_snapshot(self, snapshot: Mapping[str, Any]) -> bool:
        """Store the global snapshot; notify subscribers if its content changed (then True)."""
        text = json.dumps(snapshot, separators=(",", ":"), allow_nan=False)
        note = json.dumps(notification(snapshot, snapshot_key=self.snapshot_key))
        changed = await self._call(
            self._write_snapshot(
                keys=[self.snapshot_key, self.digest_key],
                args=[text, snapshot_digest(snapshot), self.updates_channel, note],
            )
        )
        return bool(changed)

    async def read_snapshot(self) -> dict[str, Any] | None:
        """The stored global snapshot, or None if there is none yet."""
        text = await self._call(self._client.get(self.snapshot_key))
        return None if text is None else dict(json.loads(text))

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, awaitable: Any) -> Any:
        try:
            result = await awaitable
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            raise FeedError(f"Redis unavailable: {self.last_error}") from exc
        self._mark_up()
        return result

    def _mark_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.up is not False:
            logger.warning("Redis unavailable, the snapshot is not published: %s", self.last_error)
            self.down_since = time.time()
        self.up = False

    def _mark_up(self) -> None:
        if self.up is False:
            logger.info("Redis reachable again, publishing the snapshot")
        self.up = True
        self.last_error = None
        self.down_since = None
