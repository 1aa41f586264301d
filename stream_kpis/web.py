"""HTTP views of the worker: `/kpis`, `/kpis/{program}`, `/metrics`, `/healthz`, `/readyz`.

`/kpis` serves the global snapshot (all partitions, merged through Redis) when it is
available, and this worker's own partitions otherwise, saying so in `degraded`. Errors are
JSON: an unknown programme is 404, an unknown window 400. Optional HTTP basic auth protects
every view but `/healthz`.
"""

from __future__ import annotations

import base64
import copy
import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web as aiohttp_web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from stream_kpis.worker import KpiWorker


def register_views(worker: KpiWorker) -> None:
    app = worker.app
    settings = worker.settings
    user = settings.web_basic_auth_user
    password = (
        settings.web_basic_auth_password.get_secret_value()
        if settings.web_basic_auth_password else None
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
        status = _readiness(worker)
        return web.json(status, status=200 if status["ready"] else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        if (refused := denied(web, request)) is not None:
            return refused
        response = aiohttp_web.Response(body=generate_latest(worker.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    @app.page("/kpis")
    async def kpis(web: Any, request: Any) -> Any:
        if (refused := denied(web, request)) is not None:
            return refused
        return _kpis_response(web, worker, request, program=None)

    @app.page("/kpis/{program}")
    async def kpis_program(web: Any, request: Any, program: str) -> Any:
        if (refused := denied(web, request)) is not None:
            return refused
        return _kpis_response(web, worker, request, program=program)


def _readiness(worker: KpiWorker) -> dict[str, Any]:
    consumer_ok = bool(worker.app.consumer and worker.app.consumer.assignment())
    return {
        "ready": worker.recovered and not worker.app.rebalancing,
        "tables_recovered": worker.recovered,
        "rebalancing": bool(worker.app.rebalancing),
        "partitions": sorted(worker.engines),
        "broker_assignment": consumer_ok,
        "redis": "up" if worker.feed.up else ("unknown" if worker.feed.up is None else "down"),
    }


def _kpis_response(web: Any, worker: KpiWorker, request: Any, *, program: str | None) -> Any:
    window = request.query.get("window")
    if window is not None and window not in worker.window_names:
        return web.json(
            {"error": f"unknown window {window!r}", "windows": worker.window_names}, status=400
        )

    degraded = None
    snapshot = worker.global_snapshot if worker.feed.up else None
    if snapshot is None:
        snapshot = worker.local_snapshot()
        degraded = (
            "Redis is unavailable: these KPIs cover only this worker's partitions "
            f"({sorted(worker.engines)})"
        )
    snapshot = copy.deepcopy(snapshot)

    if program is not None:
        known = {scope for scopes in snapshot["windows"].values() for scope in scopes}
        if program not in known:
            return web.json({"error": f"unknown programme {program!r}"}, status=404)
        for scopes in snapshot["windows"].values():
            kept = scopes.get(program)
            scopes.clear()
            if kept is not None:
                scopes[program] = kept
        snapshot["targets"] = [t for t in snapshot["targets"] if t["program"] == program]
        snapshot["success_rate"] = {
            k: v for k, v in snapshot["success_rate"].items() if k == program
        }
    if window is not None:
        snapshot["windows"] = {window: snapshot["windows"][window]}
        snapshot["targets"] = [t for t in snapshot["targets"] if t["window"] == window]
    if degraded:
        snapshot["degraded"] = degraded
    return web.json(snapshot)
