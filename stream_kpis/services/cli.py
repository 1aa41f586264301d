"""`stream-kpis services`: run the local Kafka, Redis and Prometheus, or install what they need."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from types import FrameType

import click

from stream_kpis.errors import ServiceError
from stream_kpis.services._process import check_port
from stream_kpis.services.install import install_all
from stream_kpis.services.kafka import KafkaBroker, start_kafka
from stream_kpis.services.prometheus import PrometheusServer, self_scrape_config, start_prometheus
from stream_kpis.services.redis import RedisServer, start_redis

PORT = click.IntRange(1, 65535)


@click.group()
def services() -> None:
    """Local services for the demo and the tests: Kafka, Redis, Prometheus."""


@services.command()
def install() -> None:
    """Install the Debian packages and fetch the Kafka jars the services need."""
    for name, where in install_all().items():
        click.echo(f"{name:<15} {where}")


@services.command()
@click.option("--kafka-port", type=PORT, help="Kafka client port [default: a free one].")
@click.option("--redis-port", type=PORT, help="Redis port [default: a free one].")
@click.option("--prometheus-port", type=PORT, help="Prometheus port [default: a free one].")
@click.option(
    "--kafka-data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep Kafka's data here between runs [default: a temporary directory].",
)
@click.option(
    "--prometheus-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="prometheus.yml to load [default: scrape itself and the worker targets].",
)
@click.option(
    "--worker-target",
    "worker_targets",
    multiple=True,
    default=["127.0.0.1:6066"],
    show_default=True,
    help="host:port of a worker for the default Prometheus configuration to scrape.",
)
@click.option("--no-prometheus", is_flag=True, help="Do not start Prometheus.")
@click.option(
    "--scram-user",
    "scram_users",
    multiple=True,
    metavar="NAME=PASSWORD",
    help="Add a SASL/SCRAM listener to Kafka with this user (repeatable).",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the STREAM_KPIS_* variables to this file, for `source`.",
)
def up(
    kafka_port: int | None,
    redis_port: int | None,
    prometheus_port: int | None,
    kafka_data_dir: Path | None,
    prometheus_config: Path | None,
    worker_targets: tuple[str, ...],
    no_prometheus: bool,
    scram_users: tuple[str, ...],
    env_file: Path | None,
) -> None:
    """Start Kafka, Redis and Prometheus on loopback; stop them on Ctrl-C."""
    users = dict(_split_user(text) for text in scram_users)
    # Refuse a busy port before anything starts, rather than after Kafka's 10-20 s start.
    for what, port in (("Kafka client", kafka_port), ("Redis", redis_port)):
        if port is not None:
            check_port(port, what)
    if prometheus_port is not None and not no_prometheus:
        check_port(prometheus_port, "Prometheus")

    with contextlib.ExitStack() as stack:
        click.echo("starting Kafka (the first run fetches its jars from Maven Central)...")
        kafka = stack.enter_context(
            start_kafka(data_dir=kafka_data_dir, port=kafka_port, scram_users=users or None)
        )
        redis_server = stack.enter_context(start_redis(port=redis_port))
        prometheus = None
        if not no_prometheus:
            config = prometheus_config or self_scrape_config(worker_targets=worker_targets)
            prometheus = stack.enter_context(start_prometheus(config, port=prometheus_port))

        exports = _exports(kafka, redis_server)
        _print_summary(kafka, redis_server, prometheus, exports)
        if env_file is not None:
            env_file.write_text("".join(f"export {key}={value}\n" for key, value in exports))
        _wait_until_stopped([kafka, redis_server, prometheus])
        click.echo("stopping...")


def _split_user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition("=")
    if not sep or not name or not password:
        raise click.BadParameter(f"{text!r} is not NAME=PASSWORD", param_hint="--scram-user")
    return name, password


def _exports(kafka: KafkaBroker, redis_server: RedisServer) -> list[tuple[str, str]]:
    return [
        ("STREAM_KPIS_BOOTSTRAP_SERVERS", kafka.bootstrap_servers),
        ("STREAM_KPIS_REDIS_URL", redis_server.url),
    ]


def _print_summary(
    kafka: KafkaBroker,
    redis_server: RedisServer,
    prometheus: PrometheusServer | None,
    exports: list[tuple[str, str]],
) -> None:
    click.echo(f"Kafka       {kafka.bootstrap_servers}   (log: {kafka.log_path})")
    if kafka.sasl_bootstrap_servers:
        click.echo(f"Kafka SCRAM {kafka.sasl_bootstrap_servers}   (SASL_PLAINTEXT)")
    click.echo(f"Redis       {redis_server.url}")
    if prometheus is not None:
        click.echo(f"Prometheus  {prometheus.url}   (config: {prometheus.config_path})")
    click.echo("\nPoint stream-kpis at them with:")
    for key, value in exports:
        click.echo(f"  export {key}={value}")
    click.echo("\nPress Ctrl-C to stop.")


def _wait_until_stopped(running: list[KafkaBroker | RedisServer | PrometheusServer | None]) -> None:
    """Block until Ctrl-C or SIGTERM; fail if a service dies on its own meanwhile."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while True:
            for service in running:
                if service is not None and not service.running:
                    raise ServiceError(f"{service!r} stopped unexpectedly")
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
