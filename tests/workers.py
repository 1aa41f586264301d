"""Real `stream-kpis worker` processes for integration tests, and a JSONL producer."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from stream_kpis.compute import TOPIC_OF_TYPE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(prefix: str, bootstrap: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Settings for a worker whose topics, group and Redis keys are private to one test."""
    env = {
        "STREAM_KPIS_APP_ID": f"{prefix}-app",
        "STREAM_KPIS_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_KPIS_REDIS_URL": redis_url,
        "STREAM_KPIS_REDIS_KEY_PREFIX": prefix,
        "STREAM_KPIS_SESSIONS_TOPIC": f"{prefix}-sessions",
        "STREAM_KPIS_SUBSCRIPTIONS_TOPIC": f"{prefix}-subscriptions",
        "STREAM_KPIS_SURVEYS_TOPIC": f"{prefix}-surveys",
        "STREAM_KPIS_DEAD_LETTER_TOPIC": f"{prefix}-dead-letter",
        "STREAM_KPIS_SNAPSHOT_INTERVAL_SECONDS": "0.5",
        "STREAM_KPIS_CLOCK": "event",
    }
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        name: str = "worker",
        auth: tuple[str, str] | None = None,
    ) -> None:
        """`auth`: the HTTP basic auth user and password the worker's views want, if any."""
        self.auth = auth
        self.port = free_port()
        self.env = {**os.environ, **env, "STREAM_KPIS_WEB_PORT": str(self.port)}
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream_kpis", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Faust keeps a data folder per app id in the working directory: the test's.
            cwd=self.log_path.parent,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout_seconds: float = 90) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2, auth=self.auth).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout_seconds} s:\n{self.log_tail()}")

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, timeout=10, auth=self.auth)

    def kpis(self) -> dict[str, Any]:
        response = self.get("/kpis")
        response.raise_for_status()
        return response.json()

    def stop(self, sig: int = signal.SIGTERM, timeout_seconds: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def subject_of(line: str) -> str | None:
    try:
        body = json.loads(line)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    subject = body.get("customer_id") or body.get("visitor_id")
    return subject if isinstance(subject, str) else None


def topic_for(line: str, prefix: str) -> str:
    try:
        kind = json.loads(line).get("type")
    except (ValueError, AttributeError):
        kind = None
    role = TOPIC_OF_TYPE.get(kind, "sessions") if isinstance(kind, str) else "sessions"
    return f"{prefix}-{role}"


def produce(
    bootstrap: str,
    prefix: str,
    lines: Iterable[str],
    *,
    key_mode: str = "subject",
) -> int:
    """Send each line to its topic; keyed by subject, or by a fixed key ("fixed")."""

    async def send_all() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        count = 0
        try:
            for line in lines:
                subject = subject_of(line) or ""
                key = b"one-key" if key_mode == "fixed" else subject.encode()
                await producer.send(topic_for(line, prefix), line.encode(), key=key)
                count += 1
            await producer.flush()
        finally:
            await producer.stop()
        return count

    return asyncio.run(send_all())


def wait_for_counts(
    worker: WorkerProcess, expected_messages: int, timeout_seconds: float = 120
) -> dict[str, Any]:
    """Wait until the global snapshot accounts for every message produced."""
    deadline = time.monotonic() + timeout_seconds
    snapshot: dict[str, Any] = {}
    while time.monotonic() < deadline:
        snapshot = worker.kpis()
        events = snapshot.get("events", {})
        seen = (
            events.get("accepted", 0)
            + events.get("duplicate", 0)
            + sum(events.get("invalid", {}).values())
        )
        if seen >= expected_messages and "degraded" not in snapshot:
            time.sleep(1.5)  # one more publish round, so every partition is in the merge
            return worker.kpis()
        time.sleep(0.5)
    raise AssertionError(
        f"only {snapshot.get('events')} of {expected_messages} messages "
        f"after {timeout_seconds} s:\n{worker.log_tail()}"
    )


def assert_same_kpis(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same windows, scopes, KPIs and values (1e-9 relative for floats)."""
    assert got["as_of"] == expected["as_of"]
    assert set(got["windows"]) == set(expected["windows"])
    for window, scopes in expected["windows"].items():
        assert set(got["windows"][window]) == set(scopes), window
        for scope, kpis in scopes.items():
            for kpi, entry in kpis.items():
                mine = got["windows"][window][scope][kpi]
                for field, value in entry.items():
                    assert _close(mine[field], value), (window, scope, kpi, field, mine, entry)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def offline_snapshot(lines: list[str], **settings: Any) -> dict[str, Any]:
    """What `stream-kpis compute` gives for the lines, with default settings (or `settings`)."""
    from stream_kpis.compute import compute
    from stream_kpis.configure import contract_config, engine_config, load_judge
    from stream_kpis.settings import load_settings

    loaded = load_settings(**settings)
    config = engine_config(loaded)
    return compute(
        [line.encode() for line in lines],
        config=config,
        contract=contract_config(loaded),
        judge=load_judge(loaded, config),
    )


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric (full sample name, e.g. `x_total`) in a /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
