"""`stream-kpis demo`: the whole product end to end on this machine.

It starts a local Kafka broker and Redis (unless told where they are), a worker on the wall
clock, and replays the bundled datasets re-timed to end now, at a steady rate, while a table
in the terminal shows the live KPIs that the worker serves on `/kpis` and `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from stream_kpis.adapters import get, retime
from stream_kpis.errors import StreamKpisError
from stream_kpis.kpis import KPIS
from stream_kpis.producer import Routing, produce
from stream_kpis.services import can_connect, free_port, start_kafka, start_redis
from stream_kpis.settings import load_settings

DEFAULT_DATASETS = ("telco", "shoppers")
_console = Console()


class DemoError(StreamKpisError):
    """The demo could not run."""


@click.command("demo")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    default=DEFAULT_DATASETS,
    show_default=True,
    help="Bundled dataset to replay (repeatable): telco, shoppers.",
)
@click.option(
    "--rate",
    type=float,
    default=400.0,
    show_default=True,
    metavar="EVENTS_PER_SECOND",
    help="Replay speed.",
)
@click.option(
    "--duration",
    type=float,
    metavar="SECONDS",
    help="Stop after this long (default: run until Ctrl-C).",
)
@click.option(
    "--web-port",
    type=int,
    help="Port of the worker's /kpis and /metrics "
    "(default 6066, or a free one when that is taken).",
)
@click.option(
    "--use-running-services",
    is_flag=True,
    help="Use STREAM_KPIS_BOOTSTRAP_SERVERS / STREAM_KPIS_REDIS_URL instead of "
    "starting a local Kafka and Redis.",
)
def demo_command(
    datasets: tuple[str, ...],
    rate: float,
    duration: float | None,
    web_port: int | None,
    use_running_services: bool,
) -> None:
    """Run Kafka, Redis, a worker and a replay of the bundled datasets; show live KPIs."""
    with contextlib.ExitStack() as stack:
        if use_running_services:
            settings = load_settings()
            bootstrap, redis_url = settings.bootstrap_servers, settings.redis_url
        else:
            _console.print("starting Kafka and Redis (the first run fetches Kafka's jars)...")
            kafka = stack.enter_context(start_kafka())
            redis_server = stack.enter_context(start_redis())
            bootstrap, redis_url = kafka.bootstrap_servers, redis_server.url

        port = web_port or (6066 if not can_connect(6066) else free_port())
        env = {
            **os.environ,
            "STREAM_KPIS_BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_KPIS_REDIS_URL": redis_url,
            "STREAM_KPIS_WEB_PORT": str(port),
            "STREAM_KPIS_CLOCK": "wall",
            "STREAM_KPIS_LOG_LEVEL": "WARNING",
        }
        worker = stack.enter_context(_worker_process(env))
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, worker)

        events = _demo_events(datasets)
        settings = load_settings(bootstrap_servers=bootstrap)
        stopping = threading.Event()

        def lines() -> Iterator[bytes]:
            for event in events:
                if stopping.is_set():
                    return
                yield json.dumps(event).encode()

        producer = threading.Thread(
            target=lambda: asyncio.run(
                produce(
                    lines(),
                    settings=settings,
                    routing=Routing.from_settings(settings),
                    rate_per_second=rate,
                )
            ),
            daemon=True,
        )
        producer.start()
        # Leaving the `with` block stops the worker, then Redis and Kafka: the producer must
        # have let go of Kafka before that.
        stack.callback(producer.join, 30)
        stack.callback(stopping.set)
        _console.print(
            f"worker: {url}/kpis  {url}/metrics   replaying {len(events)} events "
            f"from {', '.join(datasets)} at {rate:g}/s; Ctrl-C stops"
        )
        _show_live(url, worker, total=len(events), duration=duration)


@contextlib.contextmanager
def _worker_process(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"stream-kpis-demo-worker-{os.getpid()}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream_kpis", "worker"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    _console.print(f"worker log: {log}")


def _wait_ready(url: str, worker: subprocess.Popen[bytes], timeout_seconds: float = 90) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise DemoError("the worker stopped while starting; see its log")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise DemoError(f"the worker was not ready after {timeout_seconds:g} s")


def _demo_events(datasets: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every dataset re-timed to end now, merged in event-time order."""
    now = datetime.now(UTC).replace(microsecond=0)
    merged: list[dict[str, Any]] = []
    for name in datasets:
        merged.extend(retime(get(name).events(), now))
    merged.sort(key=lambda event: str(event.get("occurred_at", "")))
    return merged


def _fetch(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/kpis", timeout=5) as response:
            return dict(json.load(response))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _show_live(
    url: str, worker: subprocess.Popen[bytes], *, total: int, duration: float | None
) -> None:
    stop_at = None if duration is None else time.monotonic() + duration
    with (
        Live(console=_console, refresh_per_second=2) as live,
        contextlib.suppress(KeyboardInterrupt),
    ):
        while stop_at is None or time.monotonic() < stop_at:
            if worker.poll() is not None:
                raise DemoError("the worker stopped; see its log")
            snapshot = _fetch(url)
            if snapshot is not None:
                live.update(_render(snapshot, total))
            time.sleep(1)


def _render(snapshot: dict[str, Any], total: int) -> Group:
    windows = list(snapshot["windows"])
    table = Table(title=f"stream-kpis, all programmes, as of {snapshot['as_of']}")
    table.add_column("KPI")
    for window in windows:
        table.add_column(window, justify="right")
    for kpi in KPIS:
        cells = []
        for window in windows:
            entry = snapshot["windows"][window].get("all", {}).get(kpi.name, {})
            cells.append(_cell(entry, kpi.unit))
        table.add_row(kpi.name, *cells)
    events = snapshot.get("events", {})
    invalid = sum(events.get("invalid", {}).values())
    footer = Text(
        f"events: {events.get('accepted', 0)} accepted of {total} replayed, "
        f"{invalid} invalid, {events.get('duplicate', 0)} duplicate"
        + (f"   [{snapshot['degraded']['detail']}]" if snapshot.get("degraded") else "")
    )
    return Group(table, footer)


def _cell(entry: dict[str, Any], unit: str) -> str:
    value = entry.get("value")
    if value is None:
        return "-"
    if unit == "ratio":
        text = f"{value:.1%}"
    elif unit == "seconds":
        text = f"{value:,.0f} s"
    else:
        text = f"{value:.2f}"
    return f"{text} (n={entry.get('denominator', 0):,})"
