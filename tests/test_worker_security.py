"""Kafka security settings reach both Kafka clients of the worker: Faust's consumer and
producer (`_credentials`) and the admin client that checks the topics (`_admin_config`)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest

from stream_kpis.settings import load_settings
from stream_kpis.worker import KpiWorker

PASSWORD = "not-in-any-repr-3b1f"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA, and a client certificate and key, made with openssl."""
    directory = tmp_path_factory.mktemp("tls")
    ca, cert, key = directory / "ca.pem", directory / "client.pem", directory / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=test-ca", "-keyout", str(directory / "ca.key"), "-out", str(ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=client", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


def worker(**settings: object) -> KpiWorker:
    return KpiWorker(load_settings(**settings), worker_id="test")


def test_plaintext_has_no_credentials():
    w = worker()
    assert w._credentials() is None
    assert w._admin_config() == {"bootstrap_servers": w.settings.bootstrap_servers}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_over_plaintext(mechanism):
    w = worker(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="kpis",
        sasl_password=PASSWORD,
    )

    credentials = w._credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == mechanism
    assert credentials.username == "kpis" and credentials.password == PASSWORD
    assert credentials.ssl_context is None
    assert PASSWORD not in repr(credentials)

    config = w._admin_config()
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert config["sasl_mechanism"] == mechanism
    assert config["sasl_plain_username"] == "kpis"
    assert config["sasl_plain_password"] == PASSWORD
    assert "ssl_context" not in config


def test_plain_over_tls_verifies_the_broker_with_the_ca(tls_files):
    w = worker(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="kpis",
        sasl_password=PASSWORD,
        ssl_cafile=tls_files["ca"],
    )

    credentials = w._credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "PLAIN"
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.ssl_context.get_ca_certs()[0]["subject"] == ((("commonName", "test-ca"),),)

    config = w._admin_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "PLAIN"
    assert isinstance(config["ssl_context"], ssl.SSLContext)
    assert config["ssl_context"].get_ca_certs() == credentials.ssl_context.get_ca_certs()


def test_mutual_tls(tls_files):
    w = worker(
        security_protocol="SSL",
        ssl_cafile=tls_files["ca"],
        ssl_certfile=tls_files["cert"],
        ssl_keyfile=tls_files["key"],
    )

    credentials = w._credentials()
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"
    config = w._admin_config()
    assert config["security_protocol"] == "SSL"
    assert isinstance(config["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in config


def test_a_client_key_that_does_not_match_is_refused(tls_files):
    with pytest.raises(ssl.SSLError):
        worker(
            security_protocol="SSL",
            ssl_cafile=tls_files["ca"],
            ssl_certfile=tls_files["cert"],
            ssl_keyfile=tls_files["ca"].with_name("ca.key"),
        )
