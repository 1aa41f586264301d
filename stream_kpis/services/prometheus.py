"""A Prometheus server on loopback with a given configuration, for the demo and the tests.

Debian's `prometheus` runs on a free port with its storage in a temporary directory. Ready
means `/-/ready` answers 200. `query()` runs an instant PromQL query through the HTTP API, so a
test can read back what was scraped or what a rule recorded.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

START_TIMEOUT_SECONDS = 60.0


def promtool_path() -> str:
    """The path of `promtool` (installing the prometheus package first when allowed)."""
    return require_command("promtool")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class PrometheusServer(Service):
    """A Prometheus process: `url` for its web UI and API, `query()` for PromQL."""

    def __init__(self, config_path: Path, port: int, work_dir: Path) -> None:
        self.config_path = config_path
        self.port = port
        self.work_dir = work_dir
        self._child = ChildProcess(
            f"Prometheus on port {port}",
            [
                require_command("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={work_dir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                # /-/reload lets a test load changed rules without a restart.
                "--web.enable-lifecycle",
            ],
            work_dir / "prometheus.log",
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._child.running

    def start(self) -> PrometheusServer:
        if not self._child.running:
            check_port(self.port, "Prometheus")
            self._child.start()
            self._child.wait_ready(lambda: _http_ok(f"{self.url}/-/ready"), START_TIMEOUT_SECONDS)
        return self

    def stop(self) -> None:
        self._child.stop()

    def close(self) -> None:
        """Stop and remove the storage directory."""
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def reload(self) -> None:
        """Ask Prometheus to re-read its configuration and rule files."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10.0):
                pass
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceError(f"Prometheus at {self.url} refused to reload: {exc}") from None

    def api(self, path: str, **params: str) -> Any:
        """GET `/api/v1/<path>` and return its `data`, or raise ServiceError."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10.0) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceError(f"Prometheus at {self.url} does not answer: {exc}") from None
        if body.get("status") != "success":
            raise ServiceError(f"Prometheus API {path} failed: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query; return the result vector (`metric` and `value` per series)."""
        data = self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    def __repr__(self) -> str:
        return f"<PrometheusServer {self.url} config={self.config_path}>"


def self_scrape_config(scrape_interval_seconds: int = 1, worker_targets: Sequence[str] = ()) -> str:
    """A minimal configuration: Prometheus scrapes itself (`{self}`, filled in at start) and,
    when given, stream-kpis workers (`host:port` of their web servers, job `stream-kpis`)."""
    interval = f"{scrape_interval_seconds}s"
    lines = [
        "global:",
        f"  scrape_interval: {interval}",
        f"  evaluation_interval: {interval}",
        "scrape_configs:",
        "  - job_name: prometheus",
        "    static_configs:",
        "      - targets: ['{self}']",
    ]
    if worker_targets:
        listed = ", ".join(f"'{target}'" for target in worker_targets)
        lines += [
            "  - job_name: stream-kpis",
            "    static_configs:",
            f"      - targets: [{listed}]",
        ]
    return "\n".join(lines) + "\n"


def start_prometheus(
    config: Path | str | None = None,
    port: int | None = None,
) -> PrometheusServer:
    """Start Prometheus with a configuration and return it once `/-/ready` answers 200.

    `config` is a path to a prometheus.yml, or its text. Text may contain `{self}`, which
    becomes this server's own `host:port` (so it can scrape itself). Without a config,
    Prometheus scrapes itself every second. Rule files named by a path config are read
    relative to that file, as Prometheus does.
    """
    chosen = check_port(port, "Prometheus") if port else free_port()
    work_dir = Path(tempfile.mkdtemp(prefix="stream-kpis-prometheus-"))

    if isinstance(config, Path):
        if not config.is_file():
            shutil.rmtree(work_dir, ignore_errors=True)
            raise ServiceError(f"Prometheus configuration {config} does not exist")
        config_path = config.resolve()
    else:
        text = self_scrape_config() if config is None else config
        config_path = work_dir / "prometheus.yml"
        config_path.write_text(text.replace("{self}", f"{LOOPBACK}:{chosen}"))

    server = PrometheusServer(config_path, chosen, work_dir)
    try:
        return server.start()
    except BaseException:
        server.close()
        raise
