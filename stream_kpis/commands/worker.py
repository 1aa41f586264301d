"""`stream-kpis worker`: run one streaming worker."""

from __future__ import annotations

import errno
import socket

import click

from stream_kpis.commands.params import settings_from_flags
from stream_kpis.errors import ConfigError


@click.command("worker")
@click.option("--bootstrap-servers", help="Kafka brokers (STREAM_KPIS_BOOTSTRAP_SERVERS).")
@click.option("--redis-url", help="Redis for the dashboard feed (STREAM_KPIS_REDIS_URL).")
@click.option("--web-host", help="Address of /kpis and /metrics (STREAM_KPIS_WEB_HOST).")
@click.option("--web-port", type=int, help="Port of /kpis and /metrics (STREAM_KPIS_WEB_PORT).")
@click.option(
    "--clock",
    type=click.Choice(["wall", "event"]),
    help="'wall' for live data; 'event' to replay history (STREAM_KPIS_CLOCK).",
)
@click.option("--app-id", help="Consumer group and internal topic prefix (STREAM_KPIS_APP_ID).")
@click.option("--targets", "targets_file", help="TOML file of KPI targets.")
def worker_command(**options: object) -> None:
    """Consume the session, subscription and survey topics and serve live KPIs.

    KPIs are served on http://WEB_HOST:WEB_PORT/kpis (JSON) and /metrics (Prometheus), and
    published to Redis. Stop it with Ctrl-C or SIGTERM: the batch in flight is finished and
    its state and offsets committed.
    """
    from stream_kpis.worker import run_worker

    settings = settings_from_flags(**options)
    check_can_listen(settings.web_host, settings.web_port)
    run_worker(settings)


def check_can_listen(host: str, port: int) -> None:
    """ConfigError naming host:port when the web server could not listen there.

    The web server starts only after Kafka answered, and a failure there is a traceback from
    inside the framework; binding first says why at once. The port is let go again at once.
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"--web-host {host!r}: the host does not resolve ({exc.strerror})"
        ) from None
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            # As the web server does, so a port whose last connections wait in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"--web-port {port}: cannot listen on {address}, the port is in use; "
                        "choose another with --web-port or STREAM_KPIS_WEB_PORT"
                    ) from None
                raise ConfigError(
                    f"--web-host {host!r}: cannot listen on {address} ({exc.strerror})"
                ) from None
