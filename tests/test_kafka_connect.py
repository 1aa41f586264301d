"""The one-line reason given when a Kafka client cannot connect."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import KafkaConnectionError

from stream_kpis.kafka_connect import cannot_connect, connect_failures

BOOTSTRAP_FAILED = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")


@pytest.mark.parametrize(
    ("logged", "meaning", "advice"),
    [
        (
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
            "issuer certificate (_ssl.c:1006)",
            "the TLS handshake failed",
            "STREAM_KPIS_SSL_CAFILE",
        ),
        (
            "[Error 58] SaslAuthenticationFailed: Authentication failed: Invalid username or "
            "password",
            "the broker refused the credentials",
            "STREAM_KPIS_SASL_PASSWORD",
        ),
        (
            "[Errno 111] Connect call failed ('127.0.0.1', 1)",
            "nothing accepts connections there",
            "stream-kpis services up",
        ),
        (
            "KafkaConnectionError: Connection at 127.0.0.1:9093 closed",
            "the broker closed the connection",
            "STREAM_KPIS_SECURITY_PROTOCOL",
        ),
    ],
)
def test_the_logged_cause_becomes_a_reason_and_advice(logged, meaning, advice):
    with connect_failures() as causes:
        logging.getLogger("aiokafka.conn").error('Unable connect to "127.0.0.1:9093": %s', logged)
        logging.getLogger("aiokafka").error("Unrelated: %s", "ignored")

    assert causes == [logged]
    line = cannot_connect("127.0.0.1:9093", BOOTSTRAP_FAILED, causes)
    assert line.startswith(f"cannot connect to Kafka at 127.0.0.1:9093: {meaning} ({logged});")
    assert advice in line
    assert "\n" not in line


def test_without_a_logged_cause_the_client_error_is_named():
    line = cannot_connect("k:1", BOOTSTRAP_FAILED, [])
    assert "KafkaConnectionError" in line and "Unable to bootstrap" in line
    assert "STREAM_KPIS_BOOTSTRAP_SERVERS" in line


def test_the_collector_is_removed_after_the_block():
    with connect_failures() as causes:
        pass
    logging.getLogger("aiokafka").error('Unable connect to "h:1": later')
    assert causes == []
