"""The worker's HTTP views: the OpenAPI description, and what `/kpis` answers in each state."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from stream_kpis.settings import load_settings
from stream_kpis.web import ROUTES, kpis_document, readiness
from stream_kpis.worker import KpiWorker

OPENAPI = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
WINDOWS = ["7d", "all"]


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return dict(yaml.safe_load(OPENAPI.read_text(encoding="utf-8")))


def test_the_openapi_description_is_valid(openapi):
    validate(openapi)


def test_the_openapi_description_lists_every_route_the_worker_serves(openapi):
    worker = KpiWorker(load_settings(redis_url="redis://127.0.0.1:1/0"))
    registered = {
        route.resource.canonical
        for route in worker.app.web.web_app.router.routes()
        if route.method == "GET"
    }
    assert registered == set(ROUTES)
    assert set(openapi["paths"]) == set(ROUTES)
    for path in ROUTES:
        assert "get" in openapi["paths"][path], path


def entry(numerator: int, denominator: int) -> dict[str, Any]:
    return {
        "value": numerator / denominator if denominator else None,
        "numerator": numerator,
        "denominator": denominator,
    }


def snapshot(label: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "as_of": "2026-01-31T00:00:00Z",
        "windows": {
            "7d": {"all": {"csat": entry(3, 4)}, "web": {"csat": entry(1, 2)}},
            "all": {"all": {"csat": entry(5, 8)}, "web": {"csat": entry(2, 3)}},
        },
        "targets": [
            {
                "program": "all",
                "kpi": "csat",
                "window": "7d",
                "op": ">=",
                "threshold": 0.8,
                "status": "missed",
            },
            {
                "program": "web",
                "kpi": "csat",
                "window": "all",
                "op": ">=",
                "threshold": 0.5,
                "status": "met",
            },
        ],
        "success_rate": {"all": entry(1, 2), "web": entry(1, 1)},
        "events": {"accepted": 12, "label": label},
    }


def fake_worker(*, redis_up: bool | None, global_snapshot: Any) -> Any:
    return SimpleNamespace(
        window_names=WINDOWS,
        partitions=4,
        global_snapshot=global_snapshot,
        global_partitions_seen=(0, 1),
        feed=SimpleNamespace(up=redis_up, last_error="ConnectionError: refused"),
        owned_partitions=lambda: {2, 0},
        local_snapshot=lambda: snapshot("local"),
    )


def test_the_global_snapshot_is_served_whole():
    status, body = kpis_document(
        fake_worker(redis_up=True, global_snapshot=snapshot("global")), [], program=None
    )
    assert status == 200
    assert body == snapshot("global")


def test_one_programme_keeps_its_kpis_targets_and_success_rate():
    worker = fake_worker(redis_up=True, global_snapshot=snapshot("global"))
    status, body = kpis_document(worker, [], program="web")
    assert status == 200
    assert body["windows"] == {
        "7d": {"web": {"csat": entry(1, 2)}},
        "all": {"web": {"csat": entry(2, 3)}},
    }
    assert [t["program"] for t in body["targets"]] == ["web"]
    assert body["success_rate"] == {"web": entry(1, 1)}
    # The served snapshot itself is not cut.
    assert set(worker.global_snapshot["windows"]["7d"]) == {"all", "web"}


def test_one_window_keeps_the_targets_judged_on_it():
    worker = fake_worker(redis_up=True, global_snapshot=snapshot("global"))
    status, body = kpis_document(worker, ["7d"], program="all")
    assert status == 200
    assert body["windows"] == {"7d": {"all": {"csat": entry(3, 4)}}}
    assert body["targets"] == [snapshot("")["targets"][0]]


def test_an_unknown_window_is_400_and_names_the_windows():
    worker = fake_worker(redis_up=True, global_snapshot=snapshot("global"))
    for program in (None, "web"):
        status, body = kpis_document(worker, ["2h"], program=program)
        assert status == 400
        assert body == {"error": "unknown window '2h'", "windows": WINDOWS}


def test_an_unknown_programme_is_404_and_names_the_programmes():
    worker = fake_worker(redis_up=True, global_snapshot=snapshot("global"))
    status, body = kpis_document(worker, [], program="mobile")
    assert status == 404
    assert body == {"error": "unknown programme 'mobile'", "programs": ["all", "web"]}


def test_without_redis_the_local_partitions_are_served_and_say_so():
    worker = fake_worker(redis_up=False, global_snapshot=snapshot("global"))
    status, body = kpis_document(worker, [], program=None)
    assert status == 200
    assert body["events"]["label"] == "local"
    degraded = body["degraded"]
    assert degraded["reason"] == "redis_unavailable"
    assert "ConnectionError: refused" in degraded["detail"]
    assert degraded["partitions"] == [0, 2]
    assert degraded["partitions_total"] == 4


def test_before_every_partition_is_published_the_local_partitions_are_served():
    worker = fake_worker(redis_up=True, global_snapshot=None)
    status, body = kpis_document(worker, ["7d"], program="web")
    assert status == 200
    assert body["events"]["label"] == "local"
    assert body["degraded"]["reason"] == "global_snapshot_incomplete"
    assert "[0, 1] of 4" in body["degraded"]["detail"]
    assert body["windows"] == {"7d": {"web": {"csat": entry(1, 2)}}}


@pytest.mark.parametrize(
    ("recovered", "rebalancing", "broker", "redis_up", "ready", "status", "degraded"),
    [
        (True, False, True, True, True, "ok", []),
        (True, False, True, False, True, "degraded", ["redis"]),
        (False, False, True, True, False, "not_ready", []),
        (True, True, True, True, False, "not_ready", []),
        (True, False, False, True, False, "not_ready", []),
    ],
)
def test_readiness(recovered, rebalancing, broker, redis_up, ready, status, degraded):
    worker = SimpleNamespace(
        recovered=recovered,
        app=SimpleNamespace(rebalancing=rebalancing),
        broker_reachable=lambda: broker,
        broker_error=None if broker else "TimeoutError: ",
        feed=SimpleNamespace(up=redis_up, last_error=None, down_since=None),
        owned_partitions=lambda: {1},
        worker_id="w",
    )
    body = readiness(worker)  # type: ignore[arg-type]
    assert (body["ready"], body["status"], body["degraded"]) == (ready, status, degraded)
    assert body["checks"]["broker"]["reachable"] is broker
    assert body["checks"]["redis"]["status"] == ("up" if redis_up else "down")


def test_a_window_given_twice_is_400():
    worker = fake_worker(redis_up=True, global_snapshot=snapshot("global"))
    status, body = kpis_document(worker, ["7d", "all"], program=None)
    assert status == 400
    assert body == {
        "error": "window given 2 times; give one, or none for every window",
        "windows": WINDOWS,
    }


def test_a_long_value_is_not_echoed_whole():
    worker = fake_worker(redis_up=True, global_snapshot=snapshot("global"))
    status, body = kpis_document(worker, ["w" * 5000], program=None)
    assert (status, body["error"]) == (400, f"unknown window {'w' * 60!r}… (5000 characters)")
    status, body = kpis_document(worker, [], program="p" * 61)
    assert (status, body["error"]) == (404, f"unknown programme {'p' * 60!r}… (61 characters)")
