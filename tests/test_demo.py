"""`stream-kpis demo` without services: how it stops, and what it prints without a terminal.

Kafka, Redis, the worker, the replay and the worker's `/kpis` are fakes that record what
happens to them; signals are raised in this process while the handlers of `StopSignals` are
installed (and the test's own are back once it ends).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from stream_kpis.cli import main
from stream_kpis.commands import demo
from stream_kpis.commands.demo import Interrupted, StopSignals
from stream_kpis.kpis import KPIS

SNAPSHOT: dict[str, Any] = {
    "as_of": "2026-01-01T00:00:00Z",
    "windows": {
        "1h": {"all": {"churn_rate": {"value": 0.25, "denominator": 4}}},
        "24h": {"all": {}},
    },
    "events": {"accepted": 10, "invalid": {"bad_json": 2}, "duplicate": 1},
}
WAIT_READY = demo._wait_ready  # before any fake replaces it


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the worker's log is looked for
    monkeypatch.setattr(demo, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(demo, "PLAIN_INTERVAL_SECONDS", 0.0)
    demo._console.quiet = False
    yield
    demo._console.quiet = False


class FakeProcess:
    def __init__(self, log: list[str], exit_code: int | None = None) -> None:
        self.log = log
        self.exit_code = exit_code

    def poll(self) -> int | None:
        return self.exit_code


class Fakes:
    """Stands in for everything the demo starts; `log` is what happened, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[str] = []
        self.fetches = 0
        self.on_fetch: Callable[[int], None] = lambda count: None
        self.on_start_kafka: Callable[[], None] = lambda: None
        self.on_worker_stop: Callable[[], None] = lambda: None
        self.worker_exit_code: int | None = None
        fakes = self

        class Service:
            def __init__(self, name: str) -> None:
                self.name = name
                self.bootstrap_servers = "127.0.0.1:1"
                self.url = "redis://127.0.0.1:2/0"

            def __enter__(self) -> Service:
                return self

            def __exit__(self, *exc_info: object) -> None:
                fakes.log.append(f"{self.name} stopped")

        def start_kafka() -> Service:
            fakes.on_start_kafka()
            fakes.log.append("kafka started")
            return Service("kafka")

        def start_redis() -> Service:
            fakes.log.append("redis started")
            return Service("redis")

        @contextlib.contextmanager
        def worker_process(env: dict[str, str], signals: StopSignals) -> Iterator[FakeProcess]:
            fakes.log.append("worker started")
            try:
                yield FakeProcess(fakes.log, fakes.worker_exit_code)
            finally:
                fakes.on_worker_stop()
                fakes.log.append("worker stopped")

        async def produce(lines: Iterator[bytes], **kwargs: Any) -> None:
            for _ in lines:
                pass
            fakes.log.append("replay done")

        def fetch(url: str) -> dict[str, Any]:
            fakes.fetches += 1
            fakes.on_fetch(fakes.fetches)
            return SNAPSHOT

        monkeypatch.setattr(demo, "start_kafka", start_kafka)
        monkeypatch.setattr(demo, "start_redis", start_redis)
        monkeypatch.setattr(demo, "_worker_process", worker_process)
        monkeypatch.setattr(demo, "_wait_ready", lambda url, worker: None)
        monkeypatch.setattr(demo, "_demo_events", lambda datasets: [{"n": 1}, {"n": 2}])
        monkeypatch.setattr(demo, "produce", produce)
        monkeypatch.setattr(demo, "_fetch", fetch)
        monkeypatch.setattr(demo, "can_connect", lambda port: True)
        monkeypatch.setattr(demo, "free_port", lambda: 12345)


@pytest.fixture()
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    return Fakes(monkeypatch)


def run_demo(*args: str) -> Any:
    before = {signum: signal.getsignal(signum) for signum in demo.STOP_SIGNALS}
    result = CliRunner().invoke(main, ["demo", *args])
    # The demo's handlers never outlive it.
    assert {signum: signal.getsignal(signum) for signum in demo.STOP_SIGNALS} == before
    return result


def stops_everything(log: list[str]) -> bool:
    """Everything started was stopped, the replay before the worker before Redis and Kafka."""
    stopped = [entry for entry in log if entry.endswith("stopped")]
    return stopped == ["worker stopped", "redis stopped", "kafka stopped"] and log.index(
        "replay done"
    ) < log.index("worker stopped")


@pytest.mark.parametrize(
    ("signum", "reason", "exit_code"),
    [
        (signal.SIGINT, "Ctrl-C", 130),
        (signal.SIGTERM, "SIGTERM", 143),
        (signal.SIGHUP, "SIGHUP", 129),
    ],
)
def test_a_stop_signal_stops_everything_and_exits_128_plus_its_number(
    fakes: Fakes, signum: int, reason: str, exit_code: int
) -> None:
    fakes.on_fetch = lambda count: signal.raise_signal(signum) if count == 3 else None

    result = run_demo()

    assert result.exit_code == exit_code, result.output
    assert stops_everything(fakes.log), fakes.log
    assert f"{reason}: stopping...\n" in result.output
    assert result.output.endswith("stopped\n")
    assert "Error" not in result.output and "Traceback" not in result.output
    assert "Aborted" not in result.output
    assert not isinstance(result.exception, KeyboardInterrupt)


def test_a_signal_while_kafka_starts_stops_what_started(fakes: Fakes) -> None:
    def interrupted_start() -> None:
        signal.raise_signal(signal.SIGTERM)

    fakes.on_start_kafka = interrupted_start

    result = run_demo()

    assert result.exit_code == 143, result.output
    assert fakes.log == []
    assert result.output.endswith("SIGTERM: stopping...\nstopped\n")


def test_more_signals_during_the_teardown_do_not_cut_it_short(fakes: Fakes) -> None:
    fakes.on_fetch = lambda count: signal.raise_signal(signal.SIGINT) if count == 2 else None
    fakes.on_worker_stop = lambda: (
        signal.raise_signal(signal.SIGINT),
        signal.raise_signal(signal.SIGTERM),
    )

    result = run_demo()

    assert result.exit_code == 130, result.output
    assert stops_everything(fakes.log), fakes.log


def test_the_end_of_duration_stops_everything_and_exits_0(fakes: Fakes) -> None:
    result = run_demo("--duration", "0.1")

    assert result.exit_code == 0, result.output
    assert stops_everything(fakes.log), fakes.log
    assert result.output.endswith("stopping...\nstopped\n")


def test_without_a_terminal_the_kpis_are_plain_lines(fakes: Fakes) -> None:
    result = run_demo("--duration", "0.1")

    assert "\x1b" not in result.output  # no cursor movement, no colours
    assert (
        "as of 2026-01-01T00:00:00Z: events: 10 accepted of 2 replayed, 2 invalid, 1 duplicate\n"
        in (result.output)
    )
    assert "  churn_rate  " in result.output
    assert "  1h 25.0% (n=4)  24h -\n" in result.output
    assert "  1h           -  24h -\n" in result.output
    # The start line is not wrapped at 80 columns as rich does for a pipe by default.
    assert "replaying 2 events from telco, shoppers at 400/s; Ctrl-C stops\n" in result.output


def test_plain_lines_print_every_kpi_once_per_snapshot() -> None:
    lines = demo._plain_lines(SNAPSHOT, total=20)

    assert lines[0] == (
        "as of 2026-01-01T00:00:00Z: events: 10 accepted of 20 replayed, 2 invalid, 1 duplicate"
    )
    assert [line.split()[0] for line in lines[1:]] == [kpi.name for kpi in KPIS]
    assert lines[1].endswith("  1h 25.0% (n=4)  24h -")
    assert lines[2].endswith("  1h           -  24h -")  # cells right-aligned per window
    assert len({len(line) for line in lines[1:]}) == 1


def test_plain_output_is_throttled(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "PLAIN_INTERVAL_SECONDS", 3600.0)

    result = run_demo("--duration", "0.2")

    assert fakes.fetches > 2
    # The first snapshot, and the last one at the end.
    assert result.output.count("as of ") == 2


def test_a_worker_that_dies_is_an_error_and_everything_stops(fakes: Fakes) -> None:
    fakes.worker_exit_code = 1

    result = run_demo()

    assert result.exit_code == 2
    assert "Error: the worker stopped; see its log" in result.output
    assert [entry for entry in fakes.log if entry.endswith("stopped")] == [
        "worker stopped",
        "redis stopped",
        "kafka stopped",
    ]


def test_a_worker_that_dies_is_an_error_with_the_last_line_of_its_log(fakes: Fakes) -> None:
    fakes.worker_exit_code = 1
    demo._worker_log().write_text("2026-01-01 WARNING faust: lost the broker\nKilled\n")

    result = run_demo()

    assert result.exit_code == 2
    assert "Error: the worker stopped: Killed\n" in result.output


def test_a_worker_that_stops_while_starting_says_why_from_its_log(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "_wait_ready", WAIT_READY)
    fakes.worker_exit_code = 2
    demo._worker_log().write_bytes(
        b"\x08\x1b[?25h2026-01-01 ERROR aiokafka: Unable to connect\n"
        b"Error: --web-port 6066: cannot listen on 127.0.0.1:6066, the port is in use\n"
        b"\x08\x1b[?25h\n"
    )

    result = run_demo()

    assert result.exit_code == 2, result.output
    assert (
        "Error: the worker stopped while starting: --web-port 6066: cannot listen on "
        "127.0.0.1:6066, the port is in use\n"
    ) in result.output
    assert "\x1b" not in result.output
    assert [entry for entry in fakes.log if entry.endswith("stopped")] == [
        "worker stopped",
        "redis stopped",
        "kafka stopped",
    ]


class TestLastLogLine:
    def test_the_last_error_line_without_terminal_sequences(self, tmp_path: Any) -> None:
        log = tmp_path / "worker.log"
        log.write_bytes(b"Error: first\nError: \x1b[31msecond\x1b[0m\ntraceback noise\n\x1b[?25h")
        assert demo._last_log_line(log) == "Error: second"

    def test_else_the_last_line_with_text(self, tmp_path: Any) -> None:
        log = tmp_path / "worker.log"
        log.write_bytes(b"starting\nValueError: boom\n\x08\x1b[?25h\n  \n")
        assert demo._last_log_line(log) == "ValueError: boom"

    def test_none_for_an_empty_or_missing_log(self, tmp_path: Any) -> None:
        log = tmp_path / "worker.log"
        assert demo._last_log_line(log) is None
        log.write_bytes(b"\x08\x1b[?25h\n")
        assert demo._last_log_line(log) is None

    def test_a_long_line_is_cut_short(self, tmp_path: Any) -> None:
        log = tmp_path / "worker.log"
        log.write_text("x" * 2000)
        line = demo._last_log_line(log)
        assert line is not None and len(line) == 500 and line.endswith("...")


@pytest.fixture()
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the demo starts (or reads the settings of) any service."""

    def must_not_run(name: str) -> Callable[..., Any]:
        def fail(*args: Any, **kwargs: Any) -> Any:
            pytest.fail(f"{name} was called for a bad flag value")

        return fail

    for name in (
        "start_kafka",
        "start_redis",
        "_worker_process",
        "_wait_ready",
        "_demo_events",
        "load_settings",
        "produce",
    ):
        monkeypatch.setattr(demo, name, must_not_run(name))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rate", "0"], "Invalid value for '--rate': 0.0 is not in the range x>0."),
        (["--rate", "-5"], "Invalid value for '--rate': -5.0 is not in the range x>0."),
        (["--rate", "nan"], "Invalid value for '--rate': 'nan' is not a finite number."),
        (["--rate", "inf"], "Invalid value for '--rate': 'inf' is not a finite number."),
        (["--duration", "-1"], "Invalid value for '--duration': -1.0 is not in the range x>0."),
        (["--duration", "0"], "Invalid value for '--duration': 0.0 is not in the range x>0."),
        (["--duration", "nan"], "Invalid value for '--duration': 'nan' is not a finite number."),
        (["--duration", "inf"], "Invalid value for '--duration': 'inf' is not a finite number."),
        (
            ["--dataset", "nosuch"],
            "Invalid value for '--dataset': 'nosuch' is not one of 'shoppers', 'telco'.",
        ),
        (
            ["--dataset", "telco", "--dataset", "kkbox"],
            "Invalid value for '--dataset': 'kkbox' is not one of 'shoppers', 'telco'.",
        ),
        (
            ["--web-port", "99999"],
            "Invalid value for '--web-port': 99999 is not in the range 1<=x<=65535.",
        ),
        (["--web-port", "0"], "Invalid value for '--web-port': 0 is not in the range 1<=x<=65535."),
    ],
)
@pytest.mark.usefixtures("nothing_starts")
def test_a_bad_flag_value_is_a_usage_error_before_anything_starts(
    args: list[str], expected: str
) -> None:
    result = run_demo(*args)
    assert result.exit_code == 2, result.output
    assert f"Error: {expected}\n" in result.output
    assert "starting" not in result.output


@pytest.mark.usefixtures("nothing_starts")
def test_a_web_port_in_use_is_a_usage_error_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo, "can_connect", lambda port: port == 6077)

    result = run_demo("--web-port", "6077")

    assert result.exit_code == 2, result.output
    assert "Error: Invalid value for '--web-port': 6077: the port is in use;" in result.output


@pytest.mark.usefixtures("nothing_starts")
def test_a_missing_bundled_copy_is_a_usage_error_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    missing = tmp_path / "telco.csv"
    telco = dataclasses.replace(demo.DATASETS["telco"], bundled_path=missing)
    monkeypatch.setitem(demo.DATASETS, "telco", telco)

    result = run_demo("--dataset", "telco")

    assert result.exit_code == 2, result.output
    assert (
        f"Error: Invalid value for '--dataset': 'telco': its bundled copy is missing ({missing})"
        in result.output
    )


def test_a_failed_replay_is_an_error_not_a_thread_traceback(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_produce(lines: Iterator[bytes], **kwargs: Any) -> None:
        raise demo.StreamKpisError("Kafka refused messages")

    monkeypatch.setattr(demo, "produce", failing_produce)

    result = run_demo()

    assert result.exit_code == 2
    assert "Error: replaying the datasets failed: Kafka refused messages" in result.output
    assert "redis stopped" in fakes.log and "kafka stopped" in fakes.log


def test_a_gone_reader_stops_the_demo(fakes: Fakes) -> None:
    def reader_gone(count: int) -> None:
        if count == 2:
            demo._console.quiet = True

    fakes.on_fetch = reader_gone

    result = run_demo()

    assert result.exit_code == 128 + signal.SIGPIPE
    assert stops_everything(fakes.log), fakes.log


class TestStopSignals:
    def test_the_first_signal_raises_once(self) -> None:
        with StopSignals() as signals:
            with pytest.raises(Interrupted) as raised:
                signal.raise_signal(signal.SIGTERM)
            assert raised.value.signum == signal.SIGTERM
            assert raised.value.exit_code == 143
            assert signals.stopping
            signal.raise_signal(signal.SIGINT)  # ignored: the teardown has begun

    def test_after_stop_signals_are_ignored(self) -> None:
        with StopSignals() as signals:
            signals.stop()
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGHUP)

    def test_hold_keeps_a_signal_until_the_end_of_the_block(self) -> None:
        done = []
        with StopSignals() as signals, pytest.raises(Interrupted) as raised:
            with signals.hold():
                signal.raise_signal(signal.SIGHUP)
                done.append("started")
            done.append("not reached")
        assert done == ["started"]
        assert raised.value.signum == signal.SIGHUP

    def test_hold_raises_nothing_once_stopping(self) -> None:
        with StopSignals() as signals, signals.hold():
            signal.raise_signal(signal.SIGTERM)
            signals.stop()

    def test_the_previous_handlers_come_back(self) -> None:
        before = signal.getsignal(signal.SIGTERM)
        with StopSignals():
            assert signal.getsignal(signal.SIGTERM) != before
        assert signal.getsignal(signal.SIGTERM) == before

    def test_reasons(self) -> None:
        assert Interrupted(signal.SIGINT).reason == "Ctrl-C"
        assert Interrupted(signal.SIGTERM).reason == "SIGTERM"
        assert Interrupted(signal.SIGINT).exit_code == 130


def test_a_signal_while_the_worker_starts_still_stops_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _record_worker_launches(monkeypatch, signal_while_starting=True)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with (
        StopSignals() as signals,
        pytest.raises(Interrupted),
        demo._worker_process({}, signals),
    ):
        events.append("not reached")
    assert events == ["started", "terminated"]
    assert f"worker log: {tmp_path}/stream-kpis-demo-worker-" in capsys.readouterr().out


def test_the_worker_is_stopped_and_its_log_named_when_the_demo_is_interrupted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _record_worker_launches(monkeypatch)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with (
        StopSignals() as signals,
        pytest.raises(Interrupted),
        demo._worker_process({}, signals),
    ):
        signal.raise_signal(signal.SIGTERM)
    assert events == ["started", "terminated"]
    assert f"worker log: {tmp_path}/stream-kpis-demo-worker-" in capsys.readouterr().out


def _record_worker_launches(
    monkeypatch: pytest.MonkeyPatch, *, signal_while_starting: bool = False
) -> list[str]:
    """Replace the worker's Popen by one that records "started" and "terminated"."""
    events: list[str] = []

    class Popen:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            assert kwargs["start_new_session"]
            if signal_while_starting:
                signal.raise_signal(signal.SIGTERM)  # arrives half-way through starting it
            events.append("started")

        def terminate(self) -> None:
            events.append("terminated")

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr(demo.subprocess, "Popen", Popen)
    return events
