"""Changelog batches: what is sent where, in what encoding, and what the store remembers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.serializers import codecs

from stream_kpis.partitions import ChangelogBatch, ChangelogError, PartitionTable


class FakeStore(dict[str, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[tuple[str, int], int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[(tp.topic, tp.partition)] = offset


class FakeTopic:
    def get_topic_name(self) -> str:
        return "app-subjects-changelog"


class FakeTable:
    name = "subjects"
    key_serializer = "json"
    value_serializer = "json"

    def __init__(self) -> None:
        self.data = FakeStore()
        self.changelog_topic = FakeTopic()


class RecordingProducer:
    """The two calls a changelog batch makes, with real Kafka record batches of a set size."""

    def __init__(self, batch_bytes: int) -> None:
        self.batch_bytes = batch_bytes
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []
        self.next_offset: dict[int, int] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        records = DefaultRecordBatch(bytearray(batch._build()))
        messages = [(bytes(r.key), None if r.value is None else bytes(r.value)) for r in records]
        self.sent.append((topic, partition, messages))
        base = self.next_offset.get(partition, 0)
        self.next_offset[partition] = base + len(messages)
        future = asyncio.get_running_loop().create_future()
        tp = TopicPartition(topic, partition)
        future.set_result(RecordMetadata(topic, partition, tp, base, -1, 0, 0))
        return future


def faust_json(value: Any) -> Any:
    """What Faust's json codec reads back from bytes, as on changelog recovery."""
    return codecs.loads("json", codecs.dumps("json", value))


async def test_writes_are_sent_per_partition_and_read_back_as_faust_would() -> None:
    table, producer = FakeTable(), RecordingProducer(batch_bytes=512 * 1024)
    changelog = ChangelogBatch(table, lambda: producer)
    records = {
        0: {"u1": {"p": 0, "ids": {"e1": 1.5}, "sess": {"web": [[1.5, 30.0, True, None]]}}},
        2: {"v\u00e9": {"p": 2, "subs": {"web\x1f": [[2.0, 1, "start", "19.90"]]}}, "u3": {}},
    }
    views = {p: PartitionTable(table, p, changelog=changelog) for p in records}
    for partition, written in records.items():
        for key, record in written.items():
            views[partition][key] = record
    assert changelog.queued == 3
    assert producer.sent == []  # nothing leaves before send()

    futures = await changelog.send()
    await asyncio.gather(*futures)

    assert changelog.queued == 0
    assert sorted(partition for _, partition, _ in producer.sent) == [0, 2]
    for topic, partition, messages in producer.sent:
        assert topic == "app-subjects-changelog"
        got = {
            codecs.loads("json", key): codecs.loads("json", value or b"") for key, value in messages
        }
        assert got == {key: faust_json(record) for key, record in records[partition].items()}
        assert [codecs.loads("json", key) for key, _ in messages] == list(records[partition])
    assert table.data.persisted == {
        ("app-subjects-changelog", 0): 0,
        ("app-subjects-changelog", 2): 1,
    }
    assert table.data["u1"] is records[0]["u1"]


async def test_a_delete_is_a_tombstone() -> None:
    table, producer = FakeTable(), RecordingProducer(batch_bytes=512 * 1024)
    changelog = ChangelogBatch(table, lambda: producer)
    view = PartitionTable(table, 1, changelog=changelog)
    view["gone"] = {"p": 1}
    del view["gone"]
    await asyncio.gather(*await changelog.send())

    ((_, _, messages),) = producer.sent
    assert messages == [(b'"gone"', b'{"p":1}'), (b'"gone"', None)]
    assert "gone" not in table.data


async def test_a_full_batch_continues_in_the_next_one_in_order() -> None:
    table, producer = FakeTable(), RecordingProducer(batch_bytes=1024)
    changelog = ChangelogBatch(table, lambda: producer)
    view = PartitionTable(table, 3, changelog=changelog)
    for n in range(40):
        view[f"k{n}"] = {"padding": "x" * 100, "n": n}
    await asyncio.gather(*await changelog.send())

    assert len(producer.sent) > 1
    keys = [json.loads(key) for _, _, messages in producer.sent for key, _ in messages]
    assert keys == [f"k{n}" for n in range(40)]
    assert table.data.persisted == {("app-subjects-changelog", 3): 39}


async def test_a_record_larger_than_a_batch_has_one_to_itself() -> None:
    table, producer = FakeTable(), RecordingProducer(batch_bytes=256)
    changelog = ChangelogBatch(table, lambda: producer)
    view = PartitionTable(table, 0, changelog=changelog)
    view["small"] = {"n": 1}
    view["huge"] = {"padding": "x" * 1000}
    view["after"] = {"n": 2}
    await asyncio.gather(*await changelog.send())

    batches = [[json.loads(key) for key, _ in messages] for _, _, messages in producer.sent]
    assert batches == [["small"], ["huge"], ["after"]]
    assert table.data.persisted == {("app-subjects-changelog", 0): 2}


class SlowPartitionProducer(RecordingProducer):
    """Partition 0's first batch waits (a full queue in the Kafka client) until released."""

    def __init__(self) -> None:
        super().__init__(batch_bytes=512 * 1024)
        self.release = asyncio.Event()

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        if partition == 0 and not self.release.is_set():
            await self.release.wait()
        return await super().send_batch(batch, topic, partition=partition)


async def test_concurrent_sends_keep_each_partition_in_write_order() -> None:
    table, producer = FakeTable(), SlowPartitionProducer()
    changelog = ChangelogBatch(table, lambda: producer)
    zero, one = (PartitionTable(table, p, changelog=changelog) for p in (0, 1))
    # One agent's batch touches partitions 0 and 1; then another agent writes the same
    # subject of partition 1 again and sends while the first send waits on partition 0.
    zero["a"] = {"n": 1}
    one["b"] = {"n": 1}
    first = asyncio.ensure_future(changelog.send())
    await asyncio.sleep(0)
    one["b"] = {"n": 2}
    second = asyncio.ensure_future(changelog.send())
    for _ in range(5):
        await asyncio.sleep(0)
    producer.release.set()
    await asyncio.gather(*await first, *await second)

    written = [
        json.loads(value or b"")
        for _, p, messages in producer.sent
        if p == 1
        for _, value in messages
    ]
    assert written == [{"n": 1}, {"n": 2}], "the newest record of b is the last one in the log"


def test_a_table_with_another_codec_is_refused() -> None:
    table = FakeTable()
    table.value_serializer = "pickle"  # type: ignore[assignment]
    with pytest.raises(ChangelogError, match="pickle"):
        ChangelogBatch(table, lambda: None)
