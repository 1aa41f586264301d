"""Standby replicas (`STREAM_KPIS_STANDBY_REPLICAS=1`): a standby partition is never counted
as owned, and the worker holding it takes it over when its owner is killed, with the same
KPIs and outcome counts as `compute` on the same events (KPI-SPEC section 6).

Two real `stream-kpis worker` processes run on the session broker and Redis, on topics, a
consumer group and Redis keys private to the test. With two workers and four partitions each
owns two partitions and keeps a standby copy of the other two.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest
import redis

from stream_kpis.kpis import KPIS
from tests.integration.test_faults import (
    PARTITIONS,
    SESSION_TIMEOUT,
    assert_metrics_only_for_owned,
    assert_same_outcomes,
    redelivered,
    stream,
    thirds,
    wait_for_stable_snapshot,
    wait_until_counting_beyond,
)
from tests.workers import (
    WorkerProcess,
    assert_same_kpis,
    metric_samples,
    offline_snapshot,
    produce,
    worker_env,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

STANDBY = {"STREAM_KPIS_STANDBY_REPLICAS": "1", **SESSION_TIMEOUT}
EVERY_PARTITION = {str(p) for p in range(PARTITIONS)}
# Exported per partition for every window but `all`, where they have no starting cohort.
COHORT_KPIS = {kpi.name for kpi in KPIS if kpi.needs_cohort}


def summed_terms(workers: list[WorkerProcess]) -> dict[tuple[str, str, str, str], float]:
    """Numerators and denominators summed over workers and partitions, as PromQL `sum` does:
    (term, window, program, kpi) -> total."""
    totals: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for worker in workers:
        text = worker.get("/metrics").text
        for term in ("numerator", "denominator"):
            for labels, value in metric_samples(text, f"stream_kpis_kpi_{term}"):
                totals[(term, labels["window"], labels["program"], labels["kpi"])] += value
    return dict(totals)


def assert_terms_equal(totals: dict[tuple[str, str, str, str], float], expected: dict) -> None:
    """Every exported numerator and denominator sum equals the offline snapshot's."""
    wanted = {
        (term, window, program, kpi): float(entry[term])
        for window, scopes in expected["windows"].items()
        for program, kpis in scopes.items()
        for kpi, entry in kpis.items()
        if not (window == "all" and kpi in COHORT_KPIS)
        for term in ("numerator", "denominator")
    }
    assert set(totals) == set(wanted), set(totals) ^ set(wanted)
    for key, value in wanted.items():
        assert math.isclose(totals[key], value, rel_tol=1e-9, abs_tol=1e-9), (key, totals[key])


def publishers(redis_url: str, prefix: str) -> dict[str, str]:
    """The worker that last published each partition to Redis: partition -> worker id."""
    client = redis.Redis.from_url(redis_url)
    try:
        found = {}
        for partition in range(PARTITIONS):
            worker = client.hget(f"{prefix}:partition:{partition}", "worker")
            found[str(partition)] = worker.decode() if worker else ""
        return found
    finally:
        client.close()


def worker_id(worker: WorkerProcess) -> Any:
    return worker.get("/healthz").json()["worker"]


def test_standbys_are_not_counted_and_take_over_a_killed_worker(
    kafka, redis_server, unique, tmp_path
):
    lines = stream(seed=21)
    first, second, third = thirds(lines)
    expected_first = offline_snapshot(first)
    expected = offline_snapshot(lines)
    env = worker_env(unique, kafka.bootstrap_servers, redis_server.url, **STANDBY)
    survivor = WorkerProcess(env, tmp_path, name="survivor")
    killed = WorkerProcess(env, tmp_path, name="killed")

    try:
        for worker in (survivor, killed):
            worker.start()
        for worker in (survivor, killed):
            worker.wait_ready()
        produce(kafka.bootstrap_servers, unique, first)

        # Both running: every partition is active on one worker and standby on the other.
        # Only the active copies count, in Redis and in the metrics.
        before = wait_for_stable_snapshot(survivor, len(first))
        owned = {w.log_path.name: assert_metrics_only_for_owned(w) for w in (survivor, killed)}
        terms_before = summed_terms([survivor, killed])
        published = publishers(redis_server.url, unique)
        ids = {worker_id(w): w.log_path.name for w in (survivor, killed)}

        # Killed mid-stream: the survivor takes its partitions over after the session timeout,
        # while the rest of the events arrive.
        produce(kafka.bootstrap_servers, unique, second)
        wait_until_counting_beyond(survivor, len(first))
        killed.kill()
        produce(kafka.bootstrap_servers, unique, third)
        got = wait_for_stable_snapshot(survivor, len(lines))
        owned_after = assert_metrics_only_for_owned(survivor)
        terms_after = summed_terms([survivor])
        published_after = publishers(redis_server.url, unique)
        replayed = redelivered(survivor)
    finally:
        for worker in (survivor, killed):
            worker.stop()

    print(f"owned before the kill: {owned}; messages read again and skipped: {replayed:.0f}")
    assert set().union(*owned.values()) == EVERY_PARTITION
    assert sum(len(parts) for parts in owned.values()) == PARTITIONS
    assert all(len(parts) == PARTITIONS // 2 for parts in owned.values()), owned
    assert {p: ids[w] for p, w in published.items()} == {
        p: name for name, parts in owned.items() for p in parts
    }
    assert_same_kpis(before, expected_first)
    assert_same_outcomes(before, expected_first)
    assert_terms_equal(terms_before, expected_first)

    assert owned_after == EVERY_PARTITION
    assert {ids.get(w) for w in published_after.values()} == {survivor.log_path.name}
    assert_same_kpis(got, expected)
    assert_same_outcomes(got, expected)
    assert_terms_equal(terms_after, expected)
