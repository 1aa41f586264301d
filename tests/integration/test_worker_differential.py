"""A seeded mixed stream through the real broker and a real worker equals `compute`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream_kpis.generate import GeneratorConfig, generate
from tests.workers import (
    WorkerProcess,
    assert_same_kpis,
    offline_snapshot,
    produce,
    wait_for_counts,
    worker_env,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.mark.parametrize("key_mode", ["subject", "fixed"])
def test_worker_equals_compute(kafka, redis_server, unique, tmp_path, key_mode):
    lines = generate(
        GeneratorConfig(
            seed=7,
            events=4000,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            days=40,
            duplicate_fraction=0.02,
            invalid_fraction=0.02,
            out_of_order_fraction=0.0,
        )
    )
    expected = offline_snapshot(lines)

    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url)
    worker = WorkerProcess(env, tmp_path).start()
    try:
        worker.wait_ready()
        produced = produce(kafka.bootstrap_servers, unique, lines, key_mode=key_mode)
        got = wait_for_counts(worker, produced)
    finally:
        worker.stop()

    assert_same_kpis(got, expected)
    for name in ("accepted", "duplicate", "invalid"):
        assert got["events"][name] == expected["events"][name], name
    assert sum(expected["events"]["invalid"].values()) > 0
    assert expected["events"]["duplicate"] > 0
