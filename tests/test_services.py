"""The local services really start, answer, survive a restart, and fail with one clear line."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from click.testing import CliRunner

from stream_kpis.cli import main
from stream_kpis.errors import ServiceError
from stream_kpis.services import kafka as kafka_module
from stream_kpis.services import promtool_path, start_prometheus
from stream_kpis.services.install import require_command

pytestmark = pytest.mark.services


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], **sec) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **sec)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, **sec) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **sec,
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            async for record in consumer:
                got.append((record.key, record.value))
                if len(got) == count:
                    break
    finally:
        await consumer.stop()
    return got


# -- Kafka ---------------------------------------------------------------------------------


async def test_kafka_round_trip_on_a_topic_with_partitions(kafka, unique, create_topics):
    topic = unique("round-trip")
    await create_topics([topic], partitions=3)

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 3

    records = [(b"alice", b"first"), (b"bob", b"second")]
    await _produce(kafka.bootstrap_servers, topic, records)
    got = await _consume(kafka.bootstrap_servers, topic, len(records))
    assert sorted(got) == sorted(records)


async def test_kafka_restart_keeps_produced_messages(kafka, unique):
    topic = unique("durable")
    await _produce(kafka.bootstrap_servers, topic, [(b"k", b"before restart")])
    address = kafka.bootstrap_servers

    await asyncio.to_thread(kafka.restart)

    assert kafka.bootstrap_servers == address
    assert await _consume(kafka.bootstrap_servers, topic, 1) == [(b"k", b"before restart")]


async def test_kafka_scram_listener_authenticates(kafka_factory, unique):
    broker = kafka_factory(scram_users={"alice": "alice-secret"})
    topic = unique("scram")

    def scram(password: str) -> dict[str, str]:
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "alice",
            "sasl_plain_password": password,
        }

    await _produce(broker.sasl_bootstrap_servers, topic, [(b"k", b"v")], **scram("alice-secret"))
    got = await _consume(broker.sasl_bootstrap_servers, topic, 1, **scram("alice-secret"))
    assert got == [(b"k", b"v")]

    with pytest.raises(KafkaError):
        await _produce(broker.sasl_bootstrap_servers, topic, [(b"k", b"v")], **scram("wrong"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"plain_users": {"p": "pw"}}, "plain_users need the SASL_SSL listener"),
        ({"ssl_certfile": "cert.pem"}, "ssl_certfile and ssl_keyfile go together"),
        ({"ssl_certfile": "nope.pem", "ssl_keyfile": "key.pem"}, "nope.pem does not exist"),
        ({"ssl_certfile": "key.pem", "ssl_keyfile": "key.pem"}, "no BEGIN CERTIFICATE block"),
        ({"ssl_certfile": "cert.pem", "ssl_keyfile": "cert.pem"}, "no BEGIN PRIVATE KEY block"),
        ({"ssl_certfile": "cert.pem", "ssl_keyfile": "key.pem"}, "needs plain_users or scram"),
        ({"plain_users": {"p": 'pw" x'}}, "PLAIN user 'p': names and passwords must be"),
    ],
)
def test_kafka_tls_listener_options_are_checked_in_one_line(
    tmp_path, monkeypatch, options, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")

    with pytest.raises(ServiceError, match=message) as caught:
        kafka_module.start_kafka(**options)

    assert "\n" not in str(caught.value)


def test_kafka_jars_are_cached_outside_the_repository():
    libs = kafka_module.fetch_kafka_jars()
    repo = Path(__file__).resolve().parents[1]

    assert (libs / ".complete").exists()
    assert (libs / f"kafka_2.13-{kafka_module.kafka_version()}.jar").exists()
    assert not libs.resolve().is_relative_to(repo)
    assert kafka_module.fetch_kafka_jars() == libs


def test_kafka_version_is_a_3_9_release():
    major, minor, _patch = kafka_module.kafka_version().split(".")
    assert (major, minor) == ("3", "9")


# -- Redis ---------------------------------------------------------------------------------


def test_redis_answers_ping_set_get(redis_server, unique):
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        client.set(unique("key"), "value")
        assert client.get(unique("key")) == b"value"
    finally:
        client.close()


def test_redis_stop_and_start_again(redis_server, unique):
    if not redis_server.managed:
        pytest.skip("REDIS_URL names an external server, which is not ours to stop")
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=1.0)
    try:
        redis_server.stop()
        assert not redis_server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        redis_server.start()

    assert client.ping() is True
    client.close()


# -- Prometheus ----------------------------------------------------------------------------


def test_prometheus_is_ready_and_scrapes_itself(prometheus_factory):
    server = prometheus_factory()

    series = []
    for _ in range(120):  # bounded: at most about a minute
        series = server.query('up{job="prometheus"}')
        if series:
            break
        time.sleep(0.5)

    assert [s["value"][1] for s in series] == ["1"]
    assert series[0]["metric"]["instance"] == f"127.0.0.1:{server.port}"


def test_promtool_runs():
    done = subprocess.run([promtool_path(), "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "promtool" in (done.stdout + done.stderr)


def test_prometheus_with_a_missing_config_file_says_so(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(ServiceError, match="nope.yml does not exist"):
        start_prometheus(missing)


def test_prometheus_with_a_broken_config_reports_its_error():
    with pytest.raises(ServiceError, match="exited with code"):
        start_prometheus("global: [this is not a mapping\n")


# -- failures are one clear line -----------------------------------------------------------


def test_a_missing_program_names_the_install_command(monkeypatch):
    monkeypatch.setenv("STREAM_KPIS_NO_INSTALL", "1")
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(ServiceError) as caught:
        require_command("redis-server")

    message = str(caught.value)
    assert "redis-server is not installed" in message
    assert "apt-get install -y --no-install-recommends redis-server" in message
    assert "\n" not in message


def test_cli_reports_a_busy_port_in_one_line_with_exit_code_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = CliRunner().invoke(main, ["services", "up", "--redis-port", str(port)])

    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1] == (
        f"Error: Redis port {port} is already in use on 127.0.0.1: "
        "stop whatever listens there or choose another port"
    )
    assert "Traceback" not in result.output
