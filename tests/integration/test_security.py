"""A worker in a hostile environment: SASL/SCRAM to Kafka, TLS and a password to Redis, basic
auth on its HTTP views, and events full of personal data that must stay out of its logs and
metrics; and a worker that reaches Kafka over TLS with SASL PLAIN.

One private broker serves the module (`broker`): SCRAM on its SASL_PLAINTEXT listener, PLAIN
and SCRAM on its SASL_SSL listener, whose certificate a private CA signed, the same one that
signed the private TLS Redis's. One worker runs for the SCRAM tests (`secured`); every secret
reaches it from a file or the environment, as in a container. The events carry recognisable
ids and survey comments, so that a test can search everything the worker wrote and served
for them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from stream_kpis.generate import GeneratorConfig, generate
from stream_kpis.services import KafkaBroker
from tests.workers import (
    WorkerProcess,
    assert_same_kpis,
    free_port,
    offline_snapshot,
    produce,
    wait_for_counts,
    worker_env,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

# Test-only secrets, each unique enough to be found in any text that leaks it.
SCRAM_USER, SCRAM_PASSWORD = "kpis", "Scram.Pass-7f3a9c"
PLAIN_USER, PLAIN_PASSWORD = "kpis-tls", "Plain.Pass-4e8b1d"
WEB_USER, WEB_PASSWORD = "ops", "web-Pass-91c2e"
REDIS_PASSWORD = "redis-Pass-5d7e0"
SECRETS = (SCRAM_PASSWORD, PLAIN_PASSWORD, WEB_PASSWORD, REDIS_PASSWORD)
# Personal data markers: every customer, visitor, session, order and subscription id, and
# every survey comment, contains one of these.
ID_MARK, COMMENT_MARK = "zq9PERSONID", "zq9COMMENT"


def marked_lines() -> list[str]:
    generated = generate(
        GeneratorConfig(
            seed=21,
            events=1200,
            duplicate_fraction=0.02,
            invalid_fraction=0.03,
            out_of_order_fraction=0.0,
            days=40,
        )
    )
    lines = []
    for n, line in enumerate(generated):
        line = line.replace('"u0', f'"{ID_MARK}-u0')
        if '"survey_response"' in line:
            body = json.loads(line)
            body["comment"] = f"{COMMENT_MARK} number {n}: call me on my private phone"
            line = json.dumps(body)
        lines.append(line)

    # Invalid messages full of personal data: they go to the dead-letter topic, not to a log.
    survey = {
        "event_id": f"{ID_MARK}-bad-1",
        "type": "survey_response",
        "occurred_at": "2026-01-20T00:00:00Z",
        "customer_id": f"{ID_MARK}-customer-bad",
        "program": "web",
        "survey": "csat",
        "score": 99,
        "scale": "1-5",
        "comment": f"{COMMENT_MARK} out of range",
    }
    lines += [
        json.dumps(survey),
        json.dumps({**survey, "event_id": f"{ID_MARK}-bad-2", "type": "nonsense"}),
        f'{{"event_id": "{ID_MARK}-bad-3", "customer_id": "{ID_MARK}-broken", ',
    ]
    assert sum(ID_MARK in line for line in lines) > 1000
    assert sum(COMMENT_MARK in line for line in lines) > 20
    return lines


@dataclass
class TlsRedis:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a private CA (`ca.pem`) and a certificate it signed for 127.0.0.1
    (`server.pem`, key `server.key`), for the TLS Redis and the broker's TLS listener."""
    directory = tmp_path_factory.mktemp("certificates")
    _make_certificates(directory)
    return directory


@pytest.fixture(scope="module")
def broker(kafka_factory, certificates: Path) -> KafkaBroker:
    """SCRAM users on SASL_PLAINTEXT; PLAIN and SCRAM users on SASL_SSL."""
    return kafka_factory(
        scram_users={SCRAM_USER: SCRAM_PASSWORD},
        plain_users={PLAIN_USER: PLAIN_PASSWORD},
        ssl_certfile=certificates / "server.pem",
        ssl_keyfile=certificates / "server.key",
    )


@pytest.fixture(scope="module")
def tls_redis(certificates: Path) -> Iterator[TlsRedis]:
    """A Redis that speaks only TLS (certificate from a private CA) and wants a password."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (scripts/setup installs it)")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certificates / "server.pem"),
         "--tls-key-file", str(certificates / "server.key"),
         "--tls-ca-cert-file", str(certificates / "ca.pem"), "--tls-auth-clients", "no",
         "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no",
         "--dir", str(certificates)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certificates / 'ca.pem'}"
    try:
        _wait_for_ping(url)
        yield TlsRedis(url, process)
    finally:
        process.terminate()
        process.wait(10)


def _make_certificates(directory: Path) -> None:
    """A private CA (`ca.pem`, `ca.key`) and a certificate it signed for 127.0.0.1."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.cnf",
            "-out", "server.pem")  # fmt: skip


def _wait_for_ping(url: str, timeout_seconds: float = 20) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            if client.ping():
                return
        except (redis.RedisError, OSError):
            time.sleep(0.2)
        finally:
            client.close()
    raise AssertionError("the TLS Redis did not answer")


@dataclass
class Secured:
    worker: WorkerProcess
    lines: list[str]
    snapshot: dict[str, Any]
    env: dict[str, str]
    redis_url: str


@pytest.fixture(scope="module")
def secured(broker, tls_redis, tmp_path_factory) -> Iterator[Secured]:
    assert broker.sasl_bootstrap_servers is not None
    directory = tmp_path_factory.mktemp("secured")
    (directory / "sasl-password").write_text(SCRAM_PASSWORD + "\n")
    (directory / "web-password").write_text(WEB_PASSWORD + "\n")
    prefix = f"s{uuid.uuid4().hex[:10]}"
    env = worker_env(
        prefix,
        broker.sasl_bootstrap_servers,
        tls_redis.url,
        STREAM_KPIS_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        STREAM_KPIS_SASL_MECHANISM="SCRAM-SHA-512",
        STREAM_KPIS_SASL_USERNAME=SCRAM_USER,
        STREAM_KPIS_SASL_PASSWORD_FILE=str(directory / "sasl-password"),
        STREAM_KPIS_WEB_BASIC_AUTH_USER=WEB_USER,
        STREAM_KPIS_WEB_BASIC_AUTH_PASSWORD_FILE=str(directory / "web-password"),
        STREAM_KPIS_LOG_LEVEL="INFO",
    )
    lines = marked_lines()

    worker = WorkerProcess(env, directory, name="secured", auth=(WEB_USER, WEB_PASSWORD))
    worker.start()
    try:
        worker.wait_ready()
        # The test's producer uses the broker's PLAINTEXT listener; the worker only SCRAM.
        produce(broker.bootstrap_servers, prefix, lines)
        snapshot = wait_for_counts(worker, len(lines))
        yield Secured(worker, lines, snapshot, env, tls_redis.url)
    finally:
        worker.stop()


def test_worker_processes_events_over_scram_and_publishes_to_tls_redis(secured):
    expected = offline_snapshot(secured.lines)
    assert_same_kpis(secured.snapshot, expected)
    assert secured.snapshot["events"] == expected["events"]
    assert "degraded" not in secured.snapshot  # the global snapshot, merged through Redis

    client = redis.Redis.from_url(secured.redis_url)
    try:
        stored = json.loads(client.get(f"{secured.env['STREAM_KPIS_REDIS_KEY_PREFIX']}:snapshot"))
    finally:
        client.close()
    assert stored["events"] == expected["events"]


@pytest.mark.parametrize("path", ["/kpis", "/kpis/web", "/metrics", "/readyz"])
def test_basic_auth_guards_the_views(secured, path):
    url = f"{secured.worker.url}{path}"

    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert httpx.get(url, timeout=10, auth=(WEB_USER, "wrong")).status_code == 401
    assert httpx.get(url, timeout=10, auth=("someone", WEB_PASSWORD)).status_code == 401
    assert httpx.get(url, timeout=10, auth=(WEB_USER, WEB_PASSWORD)).status_code == 200


def test_liveness_needs_no_credentials(secured):
    assert httpx.get(f"{secured.worker.url}/healthz", timeout=10).status_code == 200


def failed_worker_output(env: dict[str, str]) -> str:
    """Run a worker that must fail to start; its output, once it has exited non-zero with no
    traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "stream_kpis", "worker", "--web-port", str(free_port())],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    return output


def test_a_wrong_kafka_password_stops_the_worker_with_a_clear_error(secured, tmp_path):
    wrong = tmp_path / "sasl-password"
    wrong.write_text("Wrong.Pass-1234\n")

    output = failed_worker_output({**secured.env, "STREAM_KPIS_SASL_PASSWORD_FILE": str(wrong)})

    last = output.strip().splitlines()[-1]
    assert "the broker refused the credentials" in last, output
    assert "STREAM_KPIS_SASL_PASSWORD" in last, output
    assert "Wrong.Pass-1234" not in output


def test_no_personal_data_or_secrets_in_logs_metrics_or_views(secured):
    worker = secured.worker
    served = "\n".join(worker.get(path).text for path in ("/metrics", "/kpis", "/readyz"))
    worker.stop()  # the shutdown's log lines too
    log = worker.log_path.read_text(errors="replace")

    assert "owning partitions" in log  # the worker did log at INFO
    for text, where in ((log, "log"), (served, "HTTP views")):
        for mark in (ID_MARK, COMMENT_MARK, *SECRETS):
            assert mark not in text, f"{mark!r} in the {where}"


# -- SASL PLAIN over TLS, after the SCRAM worker has stopped ---------------------------------


def plain_over_tls_env(
    broker: KafkaBroker, redis_url: str, cafile: Path, directory: Path
) -> dict[str, str]:
    """A worker's settings for the broker's SASL_SSL listener, PLAIN user, trusting `cafile`."""
    assert broker.sasl_ssl_bootstrap_servers is not None
    (directory / "plain-password").write_text(PLAIN_PASSWORD + "\n")
    return worker_env(
        f"p{uuid.uuid4().hex[:10]}",
        broker.sasl_ssl_bootstrap_servers,
        redis_url,
        STREAM_KPIS_SECURITY_PROTOCOL="SASL_SSL",
        STREAM_KPIS_SASL_MECHANISM="PLAIN",
        STREAM_KPIS_SASL_USERNAME=PLAIN_USER,
        STREAM_KPIS_SASL_PASSWORD_FILE=str(directory / "plain-password"),
        STREAM_KPIS_SSL_CAFILE=str(cafile),
        STREAM_KPIS_LOG_LEVEL="INFO",
    )


def test_worker_processes_events_over_plain_on_tls(broker, tls_redis, certificates, tmp_path):
    env = plain_over_tls_env(broker, tls_redis.url, certificates / "ca.pem", tmp_path)
    # In order, as for the other workers equal to `compute`: how many events had no effect
    # depends on the order a subject's events arrive in from different topics.
    config = GeneratorConfig(seed=8, events=300, invalid_fraction=0.02, out_of_order_fraction=0)
    lines = list(generate(config))

    worker = WorkerProcess(env, tmp_path, name="plain-tls")
    worker.start()
    try:
        worker.wait_ready()
        # The test's producer uses the broker's PLAINTEXT listener; the worker only SASL_SSL.
        produce(broker.bootstrap_servers, env["STREAM_KPIS_REDIS_KEY_PREFIX"], lines)
        snapshot = wait_for_counts(worker, len(lines))
    finally:
        worker.stop()

    expected = offline_snapshot(lines)
    assert_same_kpis(snapshot, expected)
    assert snapshot["events"] == expected["events"]
    assert PLAIN_PASSWORD not in worker.log_path.read_text(errors="replace")


def test_a_ca_that_did_not_sign_the_broker_stops_the_worker_with_a_clear_error(
    broker, tls_redis, tmp_path
):
    _make_certificates(tmp_path)  # another private CA, which never signed the broker's

    output = failed_worker_output(
        plain_over_tls_env(broker, tls_redis.url, tmp_path / "ca.pem", tmp_path)
    )

    # The worker's own last line, one line, names the cause and what to check.
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: "), output
    assert "TLS handshake failed" in last, output
    assert "certificate verify failed" in last.lower(), output
    assert "STREAM_KPIS_SSL_CAFILE" in last, output
    assert PLAIN_PASSWORD not in output
