"""A Redis server on loopback for the demo and the tests, or the one `REDIS_URL` names.

The local server is Debian's `redis-server` on a free port with persistence off (`--save ''`,
`--appendonly no`) in a temporary directory: a restart starts empty. When `REDIS_URL` is set,
that server is used as it is and cannot be stopped or started from here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from stream_kpis.errors import ServiceError
from stream_kpis.services._process import (
    LOOPBACK,
    ChildProcess,
    Service,
    check_port,
    free_port,
)
from stream_kpis.services.install import require_command

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0


def _pings(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer(Service):
    """A Redis server: `url` to reach it, `stop()`/`start()` when it is ours."""

    def __init__(self, url: str, port: int | None = None, work_dir: Path | None = None) -> None:
        self.url = url
        self.port = port
        self.work_dir = work_dir
        self._child: ChildProcess | None = None
        if port is not None and work_dir is not None:
            self._child = ChildProcess(
                f"Redis on port {port}",
                [
                    require_command("redis-server"),
                    "--bind",
                    LOOPBACK,
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(work_dir),
                    "--daemonize",
                    "no",
                ],
                work_dir / "redis.log",
            )

    @property
    def managed(self) -> bool:
        """True for a server this process started (and so may stop and start)."""
        return self._child is not None

    @property
    def running(self) -> bool:
        return self._child.running if self._child else _pings(self.url)

    def start(self) -> RedisServer:
        """Start the server (again) and wait until it answers PING."""
        if self._child is None:
            if not _pings(self.url):
                raise ServiceError(f"Redis at {self.url} (REDIS_URL) does not answer PING")
            return self
        if not self._child.running:
            assert self.port is not None
            check_port(self.port, "Redis")
            self._child.start()
            self._child.wait_ready(lambda: _pings(self.url), START_TIMEOUT_SECONDS)
        return self

    def stop(self) -> None:
        """Stop the server; its data is gone (persistence is off)."""
        if self._child is None:
            raise ServiceError(f"Redis at {self.url} comes from REDIS_URL: it is not ours to stop")
        self._child.stop()

    def close(self) -> None:
        """Stop the server if it is ours and remove its directory."""
        if self._child is not None:
            self._child.stop()
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} managed={self.managed}>"


def start_redis(port: int | None = None) -> RedisServer:
    """Start a local Redis (or use `REDIS_URL` when set) and return it once it answers."""
    external = os.environ.get("REDIS_URL")
    if external:
        logger.info("using the Redis server named by REDIS_URL")
        return RedisServer(external).start()

    chosen = check_port(port, "Redis") if port else free_port()
    server = RedisServer(
        f"redis://{LOOPBACK}:{chosen}/0",
        port=chosen,
        work_dir=Path(tempfile.mkdtemp(prefix="stream-kpis-redis-")),
    )
    try:
        return server.start()
    except BaseException:
        server.close()
        raise
