"""Which partition a subject's state lives in, and a table view per partition.

A subject's record lives in partition `murmur2(subject) % N`: the partition Kafka's default
partitioner picks for a message keyed by the subject. Messages that arrive on another
partition (the producer keyed them differently) are forwarded once through the by-subject
topic, keyed by subject, so that all of a subject's events meet in one partition.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from aiokafka.partitioner import murmur2


def partition_for_subject(subject: str, partitions: int) -> int:
    """Kafka's default partition for a message keyed by the subject (UTF-8)."""
    return (murmur2(subject.encode("utf-8")) & 0x7FFFFFFF) % partitions


class PartitionTable(MutableMapping[str, Any]):
    """One partition's view of a Faust table, writing its changelog to that partition.

    Faust sends a table write to the changelog partition of the event being processed, which
    forbids writing a batch of records once, after the events. This view writes the store
    directly and sends the changelog message to the partition the record belongs to.

    `sent`, when given, collects the future of every changelog message, so that the caller
    can wait until Kafka has them before it lets the input offsets be committed.
    """

    def __init__(self, table: Any, partition: int, sent: list[Any] | None = None) -> None:
        self._table = table
        self._partition = partition
        self._sent = sent

    def __getitem__(self, key: str) -> Any:
        return self._table.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._table.data.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self._table.data[key] = value
        self._track(self._table.send_changelog(self._partition, key, value))

    def __delitem__(self, key: str) -> None:
        del self._table.data[key]
        self._track(self._table.send_changelog(self._partition, key, None, value_serializer="raw"))

    def _track(self, future: Any) -> None:
        if self._sent is not None:
            self._sent.append(future)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.data.keys())

    def __len__(self) -> int:
        return len(self._table.data)
