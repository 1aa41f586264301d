"""What the local services share: loopback ports, waiting for readiness, and child processes.

Every service runs as a child process in its own session (so a Ctrl-C in a terminal reaches
only stream-kpis, which then stops the children in order), logs to a file, and is stopped with
SIGTERM, then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

from stream_kpis.errors import ServiceError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# Children still running when the interpreter exits (a test run that crashed, a script that
# forgot to stop them) are stopped from atexit so no broker outlives the process that made it.
_RUNNING: set[ChildProcess] = set()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def check_port(port: int, what: str) -> int:
    """Return `port` if it is valid and free on loopback, else raise a one-line ServiceError."""
    if not 1 <= port <= 65535:
        raise ServiceError(f"{what} port {port} is out of range: use 1-65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            raise ServiceError(
                f"{what} port {port} is already in use on {LOOPBACK}: "
                "stop whatever listens there or choose another port"
            ) from None
    return port


def can_connect(port: int, host: str = LOOPBACK, timeout_seconds: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def last_log_line(path: Path, contains: Sequence[str] = ("ERROR", "FATAL", "Exception")) -> str:
    """The last line of a log that mentions one of `contains`, else its last non-empty line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if any(word in line for word in contains):
            return line[:300]
    return lines[-1][:300] if lines else ""


class Service:
    """What the local services share: leaving a `with` block closes them."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ChildProcess:
    """One long-running program, with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting %s: %s", self.name, " ".join(self.argv))
        with open(self.log_path, "ab") as log:
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ServiceError(f"cannot run {self.argv[0]} for {self.name}: {exc}") from None
        _RUNNING.add(self)

    def wait_ready(self, is_ready: Callable[[], bool], timeout_seconds: float) -> None:
        """Poll `is_ready` until it is true; fail early if the process exits."""
        deadline = time.monotonic() + timeout_seconds
        delay_seconds = 0.05
        while True:
            if self._popen is None or self._popen.poll() is not None:
                code = None if self._popen is None else self._popen.returncode
                raise ServiceError(
                    f"{self.name} exited with code {code} while starting "
                    f"({last_log_line(self.log_path)}); full log: {self.log_path}"
                )
            if is_ready():
                logger.info("%s is ready (pid %s)", self.name, self.pid)
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"{self.name} was not ready after {timeout_seconds:.0f} s "
                    f"({last_log_line(self.log_path)}); full log: {self.log_path}"
                )
            time.sleep(delay_seconds)
            delay_seconds = min(delay_seconds * 2, 0.5)

    def stop(self, timeout_seconds: float = 30.0) -> None:
        """SIGTERM, wait up to `timeout_seconds`, then SIGKILL. Safe to call twice."""
        popen = self._popen
        _RUNNING.discard(self)
        if popen is None or popen.poll() is not None:
            return
        logger.info("stopping %s (pid %s)", self.name, popen.pid)
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout_seconds)
            popen.kill()
            popen.wait()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would (for fault tests)."""
        popen = self._popen
        _RUNNING.discard(self)
        if popen is not None and popen.poll() is None:
            popen.kill()
            popen.wait()


@atexit.register
def _stop_leftovers() -> None:
    for child in list(_RUNNING):
        with contextlib.suppress(Exception):
            child.stop(timeout_seconds=10.0)


def run_checked(argv: Sequence[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a short command; on failure raise a ServiceError with its most telling output line."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    except OSError as exc:
        raise ServiceError(f"{what} failed: cannot run {argv[0]}: {exc}") from None
    if done.returncode != 0:
        output = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines()]
        output = [line for line in output if line]
        # The first error line is the cause; the lines after it tend to be generic advice.
        telling = [line for line in output if _is_error_line(line)] or output[-1:]
        detail = telling[0][:300] if telling else "no output"
        raise ServiceError(f"{what} failed (exit code {done.returncode}): {detail}")
    return done.stdout


def _is_error_line(line: str) -> bool:
    return line.startswith(("[ERROR]", "E:", "ERROR", "Error", "error:")) or "Exception" in line


def environ_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
