"""`stream-kpis worker`: run one streaming worker."""

from __future__ import annotations

import click

from stream_kpis.settings import load_settings


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

    run_worker(load_settings(**options))
