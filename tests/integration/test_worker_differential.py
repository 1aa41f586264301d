"""A seeded mixed stream through the real broker and a real worker equals `compute`."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from stream_kpis.generate import GeneratorConfig, generate
from tests.workers import (
    TOPIC_OF_TYPE,
    WorkerProcess,
    assert_same_kpis,
    metric_samples,
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

    # Of the stream's programmes (app, default, web), the one named keeps its metric label
    # although it comes last in sorted order, where max_programs alone would keep app.
    env = worker_env(
        unique,
        kafka.bootstrap_servers,
        redis_server.url,
        STREAM_KPIS_MAX_PROGRAMS="1",
        STREAM_KPIS_PROGRAMS="web",
    )
    worker = WorkerProcess(env, tmp_path).start()
    try:
        worker.wait_ready()
        produced = produce(kafka.bootstrap_servers, unique, lines, key_mode=key_mode)
        got = wait_for_counts(worker, produced)
        metrics = worker.get("/metrics").text
    finally:
        worker.stop()

    assert_same_kpis(got, expected)
    for name in ("accepted", "duplicate", "invalid"):
        assert got["events"][name] == expected["events"][name], name
    assert sum(expected["events"]["invalid"].values()) > 0
    assert expected["events"]["duplicate"] > 0
    assert _invalid_by_type_label(metrics) == _generated_invalid_by_type(lines)
    programs = {
        labels["program"] for labels, _ in metric_samples(metrics, "stream_kpis_kpi_numerator")
    }
    assert programs == {"all", "web", "other"}


def _invalid_by_type_label(metrics: str) -> Counter[str]:
    counted: Counter[str] = Counter()
    for labels, value in metric_samples(metrics, "stream_kpis_messages_total"):
        if labels["outcome"] == "invalid" and value:
            counted[labels["type"]] += int(value)
    return counted


def _generated_invalid_by_type(lines: list[str]) -> Counter[str]:
    """The type label each invalid line of the generator should be counted under, from the
    generator's own marking (`invalid-` event ids) and the metrics docs: the contract type
    when the line has one, `other` for an unknown type string, `unknown` when not JSON."""
    labels: Counter[str] = Counter()
    for line in lines:
        try:
            body = json.loads(line)
        except ValueError:
            labels["unknown"] += 1
            continue
        if str(body.get("event_id", "")).startswith("invalid-"):
            kind = body["type"]
            labels[kind if kind in TOPIC_OF_TYPE else "other"] += 1
    return labels
