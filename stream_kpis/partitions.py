"""Which partition a subject's state lives in, and a table view per partition.

A subject's record lives in partition `murmur2(subject) % N`: the partition Kafka's default
partitioner picks for a message keyed by the subject. Messages that arrive on another
partition (the producer keyed them differently) are forwarded once through the by-subject
topic, keyed by subject, so that all of a subject's events meet in one partition.

Changelog messages of the subject records go out through `ChangelogBatch`: serialised with
msgspec and sent with the Kafka client's batch API, one produce batch per changelog partition
and flush, instead of one trip per record through Faust's producer buffer, which was most of
the worker's time (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import msgspec
from aiokafka.partitioner import murmur2
from faust.types import TP

from stream_kpis.errors import StreamKpisError

logger = logging.getLogger(__name__)

_ENCODE = msgspec.json.Encoder().encode


class ChangelogError(StreamKpisError):
    """A table's changelog cannot be written in batches (an unexpected serializer)."""


def partition_for_subject(subject: str, partitions: int) -> int:
    """Kafka's default partition for a message keyed by the subject (UTF-8)."""
    return (murmur2(subject.encode("utf-8")) & 0x7FFFFFFF) % partitions


class PartitionTable(MutableMapping[str, Any]):
    """One partition's view of a Faust table, writing its changelog to that partition.

    Faust sends a table write to the changelog partition of the event being processed, which
    forbids writing a batch of records once, after the events. This view writes the store
    directly and sends the changelog message to the partition the record belongs to.

    `sent`, when given, collects the future of every changelog message, so that the caller
    can wait until Kafka has them before it lets the input offsets be committed. With a
    `changelog` batch, writes are queued there instead, and its `send` returns the futures.
    """

    def __init__(
        self,
        table: Any,
        partition: int,
        sent: list[Any] | None = None,
        *,
        changelog: ChangelogBatch | None = None,
    ) -> None:
        self._table = table
        self._partition = partition
        self._sent = sent
        self._changelog = changelog

    def __getitem__(self, key: str) -> Any:
        return self._table.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._table.data.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self._table.data[key] = value
        if self._changelog is not None:
            self._changelog.add(self._partition, key, value)
        else:
            self._track(self._table.send_changelog(self._partition, key, value))

    def __delitem__(self, key: str) -> None:
        del self._table.data[key]
        if self._changelog is not None:
            self._changelog.add(self._partition, key, None)
        else:
            self._track(
                self._table.send_changelog(self._partition, key, None, value_serializer="raw")
            )

    def _track(self, future: Any) -> None:
        if self._sent is not None:
            self._sent.append(future)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.data.keys())

    def __len__(self) -> int:
        return len(self._table.data)


class ChangelogBatch:
    """The changelog messages of one Faust table, queued per partition and sent in batches.

    `add` serialises a record at once (JSON, as the table's codec reads it back on recovery);
    `send` hands everything queued to the Kafka producer as one produce batch per partition
    (more when one fills) and returns the futures to wait on. As Faust does for its own
    writes, the last offset written is recorded in the table's store, which a RocksDB store
    uses to know where its recovery starts.

    `producer` returns the started aiokafka producer to send with (Faust's own, so that its
    flush before a commit covers these messages too).

    Every agent of the worker sends through the one batch, and a send can wait for Kafka
    between two partitions; sends therefore take turns. Were they to interleave, a later
    record of a subject could reach its partition before an earlier one, and the stale
    record, read last, would be the state recovered after a rebalance or a restart.
    """

    def __init__(self, table: Any, producer: Callable[[], Any]) -> None:
        for codec in (table.key_serializer, table.value_serializer):
            if codec not in (None, "json"):
                raise ChangelogError(
                    f"table {table.name!r} uses the {codec!r} codec; changelog batches write JSON"
                )
        self._table = table
        self._producer = producer
        self._queued: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self._turn = asyncio.Lock()

    def add(self, partition: int, key: str, value: Any) -> None:
        """Queue a write (`value` None deletes the key), serialised now."""
        encoded = None if value is None else _ENCODE(value)
        self._queued.setdefault(partition, []).append((_ENCODE(key), encoded))

    @property
    def queued(self) -> int:
        return sum(len(messages) for messages in self._queued.values())

    async def send(self) -> list[asyncio.Future[Any]]:
        """Send every queued message; the futures complete when Kafka has them.

        Messages leave in the order they were queued, also when several agents send at once.
        """
        async with self._turn:
            return await self._send_queued()

    async def _send_queued(self) -> list[asyncio.Future[Any]]:
        if not self._queued:
            return []
        queued, self._queued = self._queued, {}
        producer = self._producer()
        topic = self._table.changelog_topic.get_topic_name()
        futures: list[asyncio.Future[Any]] = []
        for partition, messages in queued.items():
            batch, count = producer.create_batch(), 0
            for key, value in messages:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    # Full: send it and start the next. An empty batch takes any one record.
                    futures.append(await self._send(producer, batch, topic, partition, count))
                    batch, count = producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None)
                count += 1
            if count:
                futures.append(await self._send(producer, batch, topic, partition, count))
        return futures

    async def _send(
        self, producer: Any, batch: Any, topic: str, partition: int, count: int
    ) -> asyncio.Future[Any]:
        batch.close()
        future: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
        future.add_done_callback(lambda done: self._written(done, topic, partition, count))
        return future

    def _written(self, done: asyncio.Future[Any], topic: str, partition: int, count: int) -> None:
        if done.cancelled() or done.exception() is not None or done.result() is None:
            return  # a failure is seen by whoever awaits the future; None: sent without acks
        last_offset = done.result().offset + count - 1
        self._table.data.set_persisted_offset(TP(topic, partition), last_offset)
