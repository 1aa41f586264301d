"""The dead-letter replay script of docs/operations.md, run as documented on a real broker."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_kpis.deadletter import dead_letter_headers
from stream_kpis.events import Rejection

pytestmark = pytest.mark.services

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_script() -> str:
    text = DOC.read_text()
    start = text.index("This script sends again")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


async def send_dead_letters(bootstrap: str, topic: str, letters: list[tuple]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, reason, source, offset in letters:
            headers = dead_letter_headers(
                Rejection(reason, "score", "expected 0 to 10, got 11"),
                source_topic=source,
                partition=0,
                offset=offset,
            )
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got: list[tuple] = []
        for _ in range(50):
            batches = await consumer.getmany(timeout_ms=200)
            got += [(m.key, m.value) for batch in batches.values() for m in batch]
            if len(got) >= expected:
                break
        await asyncio.sleep(0.5)  # nothing more should come
        batches = await consumer.getmany(timeout_ms=500)
        return got + [(m.key, m.value) for batch in batches.values() for m in batch]
    finally:
        await consumer.stop()


def test_replay_sends_each_original_of_one_reason_once(kafka, unique, create_topics, tmp_path):
    dead, surveys, sessions = unique("dead-letter"), unique("surveys"), unique("sessions")
    asyncio.run(create_topics([dead, surveys, sessions], partitions=1))
    letters = [
        (b"c-1", b'{"score": 11}', "score_out_of_range", surveys, 7),
        (b"c-1", b'{"score": 11}', "score_out_of_range", surveys, 7),  # read twice: a repeat
        (b"c-2", b'{"score": 12}', "score_out_of_range", surveys, 9),
        (b"v-3", b"not json", "malformed_json", sessions, 3),
    ]
    asyncio.run(send_dead_letters(kafka.bootstrap_servers, dead, letters))
    script = tmp_path / "replay.py"
    script.write_text(documented_script())

    result = subprocess.run(
        [sys.executable, str(script), kafka.bootstrap_servers, "score_out_of_range", dead],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "sent 2 messages of reason score_out_of_range again" in result.stdout
    replayed = asyncio.run(read_all(kafka.bootstrap_servers, surveys, expected=2))
    assert sorted(replayed) == [(b"c-1", b'{"score": 11}'), (b"c-2", b'{"score": 12}')]
    assert asyncio.run(read_all(kafka.bootstrap_servers, sessions, expected=0)) == []
