"""What the benchmark observes from outside a worker: its process, counters, snapshot and offsets.

A worker runs as a real `python -m stream_kpis worker` subprocess, like in production. The bench
reads it the way a user would: `/metrics` (the message counter), `/kpis` (the snapshot's event
counts), the Redis snapshot key, the consumer group's committed offsets, and its resident set
size from /proc.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import redis
from aiokafka.admin import AIOKafkaAdminClient

logger = logging.getLogger(__name__)

MESSAGES_COUNTER = "stream_kpis_messages_total"
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark cannot go on (a worker died, a deadline passed)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(
    prefix: str, bootstrap_servers: str, redis_url: str, partitions: int
) -> dict[str, str]:
    """Default worker settings, on topics, a group and Redis keys private to one bench phase."""
    return {
        "STREAM_KPIS_APP_ID": f"{prefix}-app",
        "STREAM_KPIS_BOOTSTRAP_SERVERS": bootstrap_servers,
        "STREAM_KPIS_REDIS_URL": redis_url,
        "STREAM_KPIS_REDIS_KEY_PREFIX": prefix,
        "STREAM_KPIS_SESSIONS_TOPIC": f"{prefix}-sessions",
        "STREAM_KPIS_SUBSCRIPTIONS_TOPIC": f"{prefix}-subscriptions",
        "STREAM_KPIS_SURVEYS_TOPIC": f"{prefix}-surveys",
        "STREAM_KPIS_DEAD_LETTER_TOPIC": f"{prefix}-dead-letter",
        "STREAM_KPIS_TOPIC_PARTITIONS": str(partitions),
        "STREAM_KPIS_CLOCK": "event",
    }


class Worker:
    """One `stream-kpis worker` subprocess with its HTTP port and log file."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "STREAM_KPIS_WEB_PORT": str(self.port)}
        self.app_id = env["STREAM_KPIS_APP_ID"]
        self.log_path = log_dir / f"{name}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._http = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream_kpis", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError("the worker was not started")
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(
                f"the worker exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def wait_ready(self, timeout_seconds: float = 120.0) -> float:
        """Block until /readyz answers 200; returns the seconds since start."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self._http.get("/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - self.started_at
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise BenchError(f"worker not ready in {timeout_seconds:.0f} s:\n{self.log_tail()}")

    def messages_counted(self) -> int:
        """The sum of `stream_kpis_messages_total` on /metrics (every outcome)."""
        response = self._http.get("/metrics")
        response.raise_for_status()
        return metrics_message_count(response.text)

    def kpis(self) -> dict[str, Any]:
        response = self._http.get("/kpis")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout_seconds: float = 30.0) -> None:
        self._http.close()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def metrics_message_count(text: str) -> int:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(MESSAGES_COUNTER + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def snapshot_message_count(snapshot: Mapping[str, Any]) -> int:
    """Messages a snapshot accounts for: accepted, duplicate and invalid (every outcome)."""
    events = snapshot.get("events") or {}
    invalid = events.get("invalid") or {}
    return int(events.get("accepted", 0) + events.get("duplicate", 0) + sum(invalid.values()))


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB, from /proc/<pid>/statm."""
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * _PAGE_BYTES / 2**20


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class RedisSnapshot:
    """Reads the global snapshot the workers publish under `<prefix>:snapshot`."""

    def __init__(self, url: str, prefix: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=5)
        self._key = f"{prefix}:snapshot"

    def message_count(self) -> int:
        raw = self._client.get(self._key)
        if raw is None:
            return 0
        return snapshot_message_count(json.loads(raw))

    def close(self) -> None:
        self._client.close()


async def committed_offsets(bootstrap_servers: str, group_id: str) -> dict[tuple[str, int], int]:
    """The consumer group's committed offset per (topic, partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def all_committed(
    committed: Mapping[tuple[str, int], int], end_offsets: Mapping[tuple[str, int], int]
) -> bool:
    return all(committed.get(tp, -1) >= end for tp, end in end_offsets.items())
