"""`stream-kpis demo`: the whole product end to end on this machine.

It starts a local Kafka broker and Redis (unless told where they are), a worker on the wall
clock, and replays the bundled datasets re-timed to end now, at a steady rate, while a table
in the terminal shows the live KPIs that the worker serves on `/kpis` and `/metrics`. When
stdout is not a terminal (a pipe, a file), the KPIs are printed as plain lines every few
seconds instead.

Ctrl-C, SIGTERM and SIGHUP stop it the way the end of `--duration` does: the replay, the
worker, Redis and Kafka are stopped in that order, then it exits with 128 + the signal's
number (130 for Ctrl-C, 143 for SIGTERM). Every child runs in its own session, so only the
demo gets the terminal's Ctrl-C and it alone decides the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from stream_kpis.adapters import DATASETS, get, retime
from stream_kpis.commands.params import FiniteFloatRange
from stream_kpis.errors import StreamKpisError
from stream_kpis.kpis import KPIS, KpiDefinition
from stream_kpis.producer import Routing, produce
from stream_kpis.services import can_connect, free_port, start_kafka, start_redis
from stream_kpis.settings import load_settings

DEFAULT_DATASETS = ("telco", "shoppers")
# The datasets with a copy in the repository's data/ folder: the demo replays only those.
BUNDLED_DATASETS = tuple(sorted(name for name, dataset in DATASETS.items() if dataset.bundled_path))
STOP_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
# The worker's /kpis is read this often; without a terminal, the KPIs are printed every
# PLAIN_INTERVAL_SECONDS (seconds both).
POLL_SECONDS = 1.0
PLAIN_INTERVAL_SECONDS = 10.0
# A terminal's escape sequences and control characters, removed from a line of the worker's log.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


class DemoError(StreamKpisError):
    """The demo could not run."""


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived: stop everything, then exit with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def reason(self) -> str:
        if self.signum == signal.SIGINT:
            return "Ctrl-C"
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


class StopSignals:
    """While entered, SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the main thread, once.

    Python's default SIGTERM and SIGHUP end the process at once, skipping every `finally`, so
    the broker and Redis (in sessions of their own) would outlive it. Here the first signal
    raises, which unwinds the `with` blocks that stop them; later signals are ignored so that
    they cannot cut that teardown short, nor can one arriving once `stop()` began it. Inside
    `hold()`, a signal is kept until the end of the block (starting a child process there
    cannot be interrupted half-way, leaving a child nobody stops).
    """

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.stopping = False
        self._held = 0
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in self.signals:
            previous = signal.signal(signum, self._handle)
            self._previous[signum] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def stop(self) -> None:
        """The teardown begins: from now on signals are ignored."""
        self.stopping = True

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep a signal arriving inside the block until its end."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        if not self._held and self._pending is not None and not self.stopping:
            signum, self._pending = self._pending, None
            self.stopping = True
            raise Interrupted(signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            return
        if self._held:
            self._pending = signum
            return
        self.stopping = True
        raise Interrupted(signum)


class _DemoConsole(Console):
    """A console that goes quiet, instead of exiting mid-teardown, when its reader is gone."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


_console = _DemoConsole()


def _say(text: str) -> None:
    """One line for the user, never wrapped at 80 columns when stdout is a pipe or a file."""
    try:
        _console.print(text, soft_wrap=True, markup=False)
    except OSError:  # the terminal is gone (SIGHUP): the teardown must go on regardless
        _console.quiet = True


def _check_datasets(
    ctx: click.Context, param: click.Parameter, names: tuple[str, ...]
) -> tuple[str, ...]:
    """Callback of `--dataset`: each bundled copy is there (a wheel has no data/ folder)."""
    for name in names:
        path = DATASETS[name].bundled_path
        if path is not None and not path.is_file():
            raise click.BadParameter(
                f"{name!r}: its bundled copy is missing ({path}); the demo runs from a "
                "checkout of the repository",
                ctx,
                param,
            )
    return names


def _check_web_port(ctx: click.Context, param: click.Parameter, port: int | None) -> int | None:
    """Callback of `--web-port`: refused when something listens there already."""
    if port is not None and can_connect(port):
        raise click.BadParameter(
            f"{port}: the port is in use; choose another, or leave --web-port out for a free one",
            ctx,
            param,
        )
    return port


@click.command("demo")
@click.option(
    "--dataset",
    "datasets",
    type=click.Choice(BUNDLED_DATASETS),
    multiple=True,
    default=DEFAULT_DATASETS,
    show_default=True,
    callback=_check_datasets,
    help="Bundled dataset to replay (repeatable).",
)
@click.option(
    "--rate",
    type=FiniteFloatRange(min=0, min_open=True),
    default=400.0,
    show_default=True,
    metavar="EVENTS_PER_SECOND",
    help="Replay speed.",
)
@click.option(
    "--duration",
    type=FiniteFloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop after this long (default: run until Ctrl-C).",
)
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    callback=_check_web_port,
    help="Port of the worker's /kpis and /metrics "
    "(default 6066, or a free one when that is taken).",
)
@click.option(
    "--use-running-services",
    is_flag=True,
    help="Use STREAM_KPIS_BOOTSTRAP_SERVERS / STREAM_KPIS_REDIS_URL instead of "
    "starting a local Kafka and Redis.",
)
def demo_command(**options: Any) -> None:
    """Run Kafka, Redis, a worker and a replay of the bundled datasets; show live KPIs."""
    interrupted: Interrupted | None = None
    with StopSignals() as signals:
        try:
            _run(signals, **options)
        except Interrupted as exc:
            interrupted = exc
        _say("stopped")
    if interrupted is not None:
        raise SystemExit(interrupted.exit_code)


def _run(
    signals: StopSignals,
    *,
    datasets: tuple[str, ...],
    rate: float,
    duration: float | None,
    web_port: int | None,
    use_running_services: bool,
) -> None:
    """Start everything, show the KPIs until `duration` or a signal, then stop it all."""
    with contextlib.ExitStack() as stack:
        try:
            if use_running_services:
                settings = load_settings()
                bootstrap, redis_url = settings.bootstrap_servers, settings.redis_url
            else:
                _say("starting Kafka and Redis (the first run fetches Kafka's jars)...")
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
            worker = stack.enter_context(_worker_process(env, signals))
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, worker)

            events = _demo_events(datasets)
            settings = load_settings(bootstrap_servers=bootstrap)
            stopping = threading.Event()
            failures: list[BaseException] = []

            def lines() -> Iterator[bytes]:
                for event in events:
                    if stopping.is_set():
                        return
                    yield json.dumps(event).encode()

            def replay() -> None:
                try:
                    asyncio.run(
                        produce(
                            lines(),
                            settings=settings,
                            routing=Routing.from_settings(settings),
                            rate_per_second=rate,
                        )
                    )
                except Exception as exc:  # shown by the main thread, not as a traceback
                    failures.append(exc)

            producer = threading.Thread(target=replay, name="demo-replay", daemon=True)
            producer.start()
            # Leaving the `with` block stops the worker, then Redis and Kafka: the producer
            # must have let go of Kafka before that.
            stack.callback(producer.join, 30)
            stack.callback(stopping.set)
            _say(
                f"worker: {url}/kpis  {url}/metrics   replaying {len(events)} events "
                f"from {', '.join(datasets)} at {rate:g}/s; Ctrl-C stops"
            )
            _show_live(url, worker, failures, total=len(events), duration=duration)
        except Interrupted as exc:
            signals.stop()
            _say(f"{exc.reason}: stopping...")
            raise
        else:
            signals.stop()
            _say("stopping...")
        finally:
            # However it ends (an error too), nothing may interrupt stopping what was started.
            signals.stop()


@contextlib.contextmanager
def _worker_process(env: dict[str, str], signals: StopSignals) -> Iterator[subprocess.Popen[bytes]]:
    log = _worker_log()
    process: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as handle:
            # A signal while it starts is kept until `process` is set, so it is stopped below.
            with signals.hold():
                # Its own session, like Kafka's and Redis's: a Ctrl-C reaches only the demo,
                # which stops the replay before the worker and the worker before Redis and Kafka.
                process = subprocess.Popen(
                    [sys.executable, "-m", "stream_kpis", "worker"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            yield process
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # However the demo ends, a Ctrl-C or an error too.
        _say(f"worker log: {log}")


def _worker_log() -> Path:
    """Where the worker's stdout and stderr go."""
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"stream-kpis-demo-worker-{os.getpid()}.log"


def _worker_stopped(what: str) -> DemoError:
    """`what` happened to the worker, with the reason its log gives when it has one."""
    reason = _last_log_line(_worker_log())
    if reason is None:
        return DemoError(f"{what}; see its log")
    return DemoError(f"{what}: {reason.removeprefix('Error: ')}")


def _last_log_line(log: Path, tail_bytes: int = 64 * 1024, max_chars: int = 500) -> str | None:
    """The log's last `Error: ...` line, else its last line with text; None when it has none.

    Terminal control sequences (a spinner's) are removed and a long line is cut short.
    """
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - tail_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line for line in (_CONTROL.sub("", raw).strip() for raw in text.splitlines()) if line]
    if not lines:
        return None
    errors = [line for line in lines if line.startswith("Error:")]
    line = errors[-1] if errors else lines[-1]
    return line if len(line) <= max_chars else line[: max_chars - 3] + "..."


def _wait_ready(url: str, worker: subprocess.Popen[bytes], timeout_seconds: float = 90) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise _worker_stopped("the worker stopped while starting")
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
    url: str,
    worker: subprocess.Popen[bytes],
    failures: list[BaseException],
    *,
    total: int,
    duration: float | None,
) -> None:
    """The KPIs until `duration` ends: a live table on a terminal, else plain lines."""
    snapshots = _snapshots(url, worker, failures, duration)
    if _interactive():
        with Live(console=_console, refresh_per_second=2) as live:
            for snapshot in snapshots:
                if snapshot is not None:
                    live.update(_render(snapshot, total))
        return

    printed_at: float | None = None
    unprinted: dict[str, Any] | None = None
    for snapshot in snapshots:
        if snapshot is not None:
            unprinted = snapshot
        now = time.monotonic()
        if unprinted is not None and (
            printed_at is None or now - printed_at >= PLAIN_INTERVAL_SECONDS
        ):
            _print_plain(unprinted, total)
            printed_at, unprinted = now, None
    if unprinted is not None:
        _print_plain(unprinted, total)


def _interactive() -> bool:
    """True when stdout is a real terminal, where a live table can redraw itself.

    Not rich's `is_terminal`, which FORCE_COLOR makes true for a pipe or a file as well.
    """
    isatty = getattr(_console.file, "isatty", None)
    try:
        return bool(isatty is not None and isatty()) and not _console.is_dumb_terminal
    except ValueError:  # a closed file
        return False


def _snapshots(
    url: str,
    worker: subprocess.Popen[bytes],
    failures: list[BaseException],
    duration: float | None,
) -> Iterator[dict[str, Any] | None]:
    """The worker's `/kpis` about every second (None when it did not answer) until `duration`."""
    stop_at = None if duration is None else time.monotonic() + duration
    while stop_at is None or time.monotonic() < stop_at:
        if worker.poll() is not None:
            raise _worker_stopped("the worker stopped")
        if failures:
            raise DemoError(f"replaying the datasets failed: {failures[0]}")
        if _console.quiet:
            # Whoever read stdout is gone (`| head`): stop as a SIGPIPE would, but cleanly.
            raise Interrupted(signal.SIGPIPE)
        yield _fetch(url)
        time.sleep(POLL_SECONDS)


def _print_plain(snapshot: dict[str, Any], total: int) -> None:
    for line in _plain_lines(snapshot, total):
        _say(line)


def _plain_lines(snapshot: dict[str, Any], total: int) -> list[str]:
    """A snapshot as plain text: a line of counts, then one line per KPI, for logs and pipes."""
    windows = list(snapshot["windows"])
    rows = list(_rows(snapshot, windows))
    name_width = max(len(kpi.name) for kpi, _ in rows)
    # Each window's cells right-aligned in a column, as in the table.
    widths = [max(len(cells[column]) for _, cells in rows) for column in range(len(windows))]
    lines = [f"as of {snapshot['as_of']}: {_footer(snapshot, total)}"]
    for kpi, cells in rows:
        values = "  ".join(
            f"{window} {cell:>{width}}"
            for window, cell, width in zip(windows, cells, widths, strict=True)
        )
        lines.append(f"  {kpi.name:<{name_width}}  {values}".rstrip())
    return lines


def _render(snapshot: dict[str, Any], total: int) -> Group:
    windows = list(snapshot["windows"])
    table = Table(title=f"stream-kpis, all programmes, as of {snapshot['as_of']}")
    table.add_column("KPI")
    for window in windows:
        table.add_column(window, justify="right")
    for kpi, cells in _rows(snapshot, windows):
        table.add_row(kpi.name, *cells)
    return Group(table, Text(_footer(snapshot, total)))


def _rows(
    snapshot: dict[str, Any], windows: list[str]
) -> Iterator[tuple[KpiDefinition, list[str]]]:
    """Every KPI over all programmes, with its cell in each window."""
    for kpi in KPIS:
        cells = []
        for window in windows:
            entry = snapshot["windows"][window].get("all", {}).get(kpi.name, {})
            cells.append(_cell(entry, kpi.unit))
        yield kpi, cells


def _footer(snapshot: dict[str, Any], total: int) -> str:
    events = snapshot.get("events", {})
    invalid = sum(events.get("invalid", {}).values())
    return (
        f"events: {events.get('accepted', 0)} accepted of {total} replayed, "
        f"{invalid} invalid, {events.get('duplicate', 0)} duplicate"
        + (f"   [{snapshot['degraded']['detail']}]" if snapshot.get("degraded") else "")
    )


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
