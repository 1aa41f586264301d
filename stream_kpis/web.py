"""HTTP views of the worker: `/kpis`, `/kpis/{program}`, `/metrics`, `/healthz`, `/readyz`.

`/kpis` serves the global snapshot (all partitions of all workers, merged through Redis), the
same document as the Redis key. When there is none to serve (Redis unreachable, or not every
partition published yet) it serves this worker's own partitions and says so in `degraded`.
Errors are JSON `{"error": ...}`: an unknown programme is 404, an unknown window 400, missing
credentials 401. Optional HTTP basic auth protects every view but `/healthz`.

docs/openapi.yaml describes these views; tests/test_web.py keeps it in step with `ROUTES`.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web as aiohttp_web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream_kpis.errors import shown
from stream_kpis.metrics import collected_now
from stream_kpis.timefmt import format_utc

if TYPE_CHECKING:
    from stream_kpis.worker import KpiWorker

logger = logging.getLogger(__name__)

# Every path register_views serves (all answer GET).
ROUTES = ("/healthz", "/readyz", "/metrics", "/kpis", "/kpis/{program}")


def register_views(worker: KpiWorker) -> None:
    app = worker.app
    settings = worker.settings
    user = settings.web_basic_auth_user
    password = (
        settings.web_basic_auth_password.get_secret_value()
        if settings.web_basic_auth_password
        else None
    )

    def denied(web: Any, request: Any) -> Any:
        if user is None or password is None:
            return None
        expected = base64.b64encode(f"{user}:{password}".encode()).decode()
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given, f"Basic {expected}"):
            return None
        response = web.json({"error": "authentication required"}, status=401)
        response.headers["WWW-Authenticate"] = 'Basic realm="stream-kpis"'
        return response

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "alive", "worker": worker.worker_id})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        if (refused := denied(web, request)) is not None:
            return refused
        status = readiness(worker)
        return web.json(status, status=200 if status["ready"] else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        if (refused := denied(web, request)) is not None:
            return refused
        # Collect on the event loop (the engine's state is not thread-safe), format the text,
        # the slow part of a large scrape, in a thread so the loop keeps consuming meanwhile.
        frozen = collected_now(worker.registry)
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, frozen)
        response = aiohttp_web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    @app.page("/kpis")
    async def kpis(web: Any, request: Any) -> Any:
        if (refused := denied(web, request)) is not None:
            return refused
        windows = request.query.getall("window", [])
        status, body = kpis_document(worker, windows, program=None)
        return web.json(body, status=status)

    @app.page("/kpis/{program}")
    async def kpis_program(web: Any, request: Any, program: str) -> Any:
        if (refused := denied(web, request)) is not None:
            return refused
        windows = request.query.getall("window", [])
        status, body = kpis_document(worker, windows, program=program)
        return web.json(body, status=status)


def readiness(worker: KpiWorker) -> dict[str, Any]:
    """Ready when the tables are recovered, no rebalance is running and the broker answers.

    Redis is not required: without it the worker keeps processing, so it is reported under
    `degraded` while the worker stays ready.
    """
    broker = worker.broker_reachable()
    ready = worker.recovered and not worker.app.rebalancing and broker
    degraded = [] if worker.feed.up else ["redis"]
    return {
        "ready": ready,
        "status": ("degraded" if degraded else "ok") if ready else "not_ready",
        "degraded": degraded,
        "checks": {
            "tables_recovered": worker.recovered,
            "rebalancing": bool(worker.app.rebalancing),
            "broker": {"reachable": broker, "error": worker.broker_error},
            "redis": redis_status(worker),
        },
        "partitions": sorted(worker.owned_partitions()),
        "worker": worker.worker_id,
    }


def redis_status(worker: KpiWorker) -> dict[str, Any]:
    feed = worker.feed
    state = "unknown" if feed.up is None else ("up" if feed.up else "down")
    status: dict[str, Any] = {"status": state}
    if feed.up is False:
        status["error"] = feed.last_error
        if feed.down_since is not None:
            status["down_since"] = format_utc(feed.down_since)
    return status


def kpis_document(
    worker: KpiWorker, windows: Sequence[str], *, program: str | None
) -> tuple[int, dict[str, Any]]:
    """The status code and body of `/kpis` (program None) or `/kpis/{program}`, given the
    values of the `window` query parameter (none, or one)."""
    if len(windows) > 1:
        error = f"window given {len(windows)} times; give one, or none for every window"
        return 400, {"error": error, "windows": worker.window_names}
    window = windows[0] if windows else None
    if window is not None and window not in worker.window_names:
        return 400, {"error": f"unknown window {shown(window)}", "windows": worker.window_names}

    snapshot, degraded = _served_snapshot(worker)
    if program is not None:
        if program not in _programs(snapshot):
            error = f"unknown programme {shown(program)}"
            return 404, {"error": error, "programs": _programs(snapshot)}
        snapshot = only_program(snapshot, program)
    if window is not None:
        snapshot = only_window(snapshot, window)
    if degraded is not None:
        snapshot["degraded"] = degraded
    return 200, snapshot


def _served_snapshot(worker: KpiWorker) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if worker.feed.up and worker.global_snapshot is not None:
        return dict(worker.global_snapshot), None

    owned = sorted(worker.owned_partitions())
    if not worker.feed.up:
        reason = "redis_unavailable"
        detail = (
            f"Redis is unavailable ({worker.feed.last_error or 'not reached yet'}): these KPIs "
            "cover only this worker's partitions"
        )
    else:
        reason = "global_snapshot_incomplete"
        detail = (
            "not every partition has been published to Redis yet "
            f"(seen {list(worker.global_partitions_seen)} of {worker.partitions}): these KPIs "
            "cover only this worker's partitions"
        )
    degraded = {
        "reason": reason,
        "detail": detail,
        "partitions": owned,
        "partitions_total": worker.partitions,
        "served_at": format_utc(time.time()),
    }
    return worker.local_snapshot(), degraded


def _programs(snapshot: dict[str, Any]) -> list[str]:
    return sorted({scope for scopes in snapshot["windows"].values() for scope in scopes})


def only_program(snapshot: dict[str, Any], program: str) -> dict[str, Any]:
    """The snapshot cut down to one programme (scope), its targets and its success rate."""
    cut = dict(snapshot)
    cut["windows"] = {
        window: {program: scopes[program]} if program in scopes else {}
        for window, scopes in snapshot["windows"].items()
    }
    cut["targets"] = [t for t in snapshot.get("targets", []) if t["program"] == program]
    cut["success_rate"] = {
        k: v for k, v in snapshot.get("success_rate", {}).items() if k == program
    }
    return cut


def only_window(snapshot: dict[str, Any], window: str) -> dict[str, Any]:
    """The snapshot cut down to one window and the targets judged on it."""
    cut = dict(snapshot)
    cut["windows"] = {window: snapshot["windows"].get(window, {})}
    cut["targets"] = [t for t in snapshot.get("targets", []) if t["window"] == window]
    return cut
