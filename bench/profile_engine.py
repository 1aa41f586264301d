"""The worker's per-message work without Kafka: decode, apply, flush, serialise the records.

    .venv/bin/python bench/profile_engine.py --events 200000 [--cprofile out.prof]

Reads the benchmark's realistic mix (cached by bench/run.py, generated if missing), splits it
into partitions by subject as the worker does, and runs each batch of arrival order through
the same steps as `KpiWorker.process_batch`: `decode`, `PartitionEngine.apply` on the event's
apply clock, `flush`, and serialising every record written to its changelog message. Prints
CPU microseconds per message for each step. Timings are CPU time of this process, so they
hold on a busy machine better than wall-clock rates do.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from streams import read_lines, realistic_events, route

from stream_kpis.configure import contract_config, engine_config
from stream_kpis.engine import PartitionEngine
from stream_kpis.events import Rejection, decode
from stream_kpis.settings import Settings, load_settings

BATCH_MESSAGES = 2000


class Steps:
    """CPU seconds spent in each step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.process_time()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - started


def run(events: int, seed: int, partitions: int, settings: Settings) -> tuple[Steps, int, int]:
    messages = route(read_lines(realistic_events(events, seed)), partitions)
    config, contract = engine_config(settings), contract_config(settings)
    engines: dict[int, PartitionEngine] = {}
    tables: dict[int, dict[str, Any]] = {}
    clocks: dict[tuple[str, int], float] = {}
    steps = Steps()
    written = 0
    encode = _changelog_encoder()

    for start in range(0, len(messages), BATCH_MESSAGES):
        batch = messages[start : start + BATCH_MESSAGES]
        with steps.timed("decode"):
            now = time.time()
            decoded = [decode(m.value, m.topic_role, now=now, config=contract) for m in batch]

        with steps.timed("apply"):
            for index, (message, result) in enumerate(zip(batch, decoded, strict=True)):
                if isinstance(result, Rejection):
                    continue
                engine = engines.get(message.partition)
                if engine is None:
                    table = tables[message.partition] = {}
                    engine = engines[message.partition] = PartitionEngine(
                        config, table, partition=message.partition
                    )
                source = (message.topic_role, message.partition)
                clock = clocks[source] = max(clocks.get(source, 0.0), result.time)
                engine.apply(
                    result, clock=clock, source=f"{source[0]}:{source[1]}", offset=start + index
                )

        with steps.timed("flush"):
            flushed = {partition: engine.flush() for partition, engine in engines.items()}
        written += sum(len(keys) for keys in flushed.values())

        with steps.timed("serialise"):
            for partition, keys in flushed.items():
                for key in keys:
                    encode(key, tables[partition][key])

    clock = max(clocks.values())
    with steps.timed("read"):
        for engine in engines.values():
            engine.read(clock)
    return steps, len(messages), written


def _changelog_encoder() -> Callable[[str, Any], tuple[bytes, bytes]]:
    """What a changelog write serialises: the key and the record, as `ChangelogBatch` does."""
    encoder = msgspec.json.Encoder()

    def encode(key: str, record: Any) -> tuple[bytes, bytes]:
        return encoder.encode(key), encoder.encode(record)

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--cprofile", help="write a cProfile of the run to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = load_settings(clock="event")

    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    steps, messages, written = run(args.events, args.seed, args.partitions, settings)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.cprofile)

    total = sum(steps.seconds.values())
    print(
        f"{messages:,} messages, {written:,} record writes "
        f"({written / messages:.2f} per message), {total:.1f} CPU s, "
        f"{messages / total:,.0f} messages per CPU second"
    )
    for name, seconds in steps.seconds.items():
        print(
            f"  {name:<10} {seconds * 1e6 / messages:8.1f} µs per message  "
            f"{100 * seconds / total:5.1f}%"
        )


if __name__ == "__main__":
    main()
