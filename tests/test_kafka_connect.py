"""The one-line reason given when a Kafka client cannot connect."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from stream_kpis.kafka_connect import (
    cannot_connect,
    connect_failures,
    error_text,
    wait_for_leaders,
)

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
        (
            "[Errno -2] Name or service not known",
            "the host does not resolve",
            "check the host names in STREAM_KPIS_BOOTSTRAP_SERVERS",
        ),
        (
            "[Errno 8] nodename nor servname provided, or not known",
            "the host does not resolve",
            "check the host names in STREAM_KPIS_BOOTSTRAP_SERVERS",
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


def test_an_error_without_text_is_named_by_its_class():
    # What aiokafka logs when the address is an HTTP server: it waits, the request times out.
    with connect_failures() as causes:
        logging.getLogger("aiokafka").error(
            'Unable connect to "%s:%s": %s', "h", 80, TimeoutError()
        )

    assert causes == ["TimeoutError"]
    line = cannot_connect("h:80", BOOTSTRAP_FAILED, causes)
    assert line.startswith("cannot connect to Kafka at h:80: nothing answered as a Kafka broker")
    assert "(TimeoutError)" in line


def test_a_logged_exception_keeps_its_text():
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    with connect_failures() as causes:
        logging.getLogger("aiokafka").error('Unable connect to "%s:%s": %s', "h", 1, refused)

    assert causes == ["[Errno 111] Connect call failed ('127.0.0.1', 1)"]


def test_a_blank_logged_cause_is_never_a_blank_reason():
    with connect_failures() as causes:
        logging.getLogger("aiokafka").error('Unable connect to "h:1": %s', "  ")

    assert causes[0].startswith('Unable connect to "h:1":')
    assert "()" not in cannot_connect("h:1", BOOTSTRAP_FAILED, causes)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (TimeoutError(), "TimeoutError"),
        (KafkaConnectionError(), "KafkaConnectionError"),
        (OSError(" "), "OSError"),
        (OSError("boom"), "boom"),
    ],
)
def test_error_text_falls_back_to_the_class_name(error, text):
    assert error_text(error) == text


def test_without_a_logged_cause_an_empty_client_error_is_named():
    line = cannot_connect("k:1", KafkaConnectionError(), [])
    assert "(KafkaConnectionError);" in line


def test_without_a_logged_cause_the_client_error_is_named():
    line = cannot_connect("k:1", BOOTSTRAP_FAILED, [])
    assert "KafkaConnectionError" in line and "Unable to bootstrap" in line
    assert "STREAM_KPIS_BOOTSTRAP_SERVERS" in line


def test_the_collector_is_removed_after_the_block():
    with connect_failures() as causes:
        pass
    logging.getLogger("aiokafka").error('Unable connect to "h:1": later')
    assert causes == []


class LaggingAdmin:
    """describe_topics as a broker answers while a new topic's leaders are being elected."""

    def __init__(self, answers: list[dict[str, int]]) -> None:
        self.answers = answers  # per call: topic -> leader of its partitions (-1: none yet)
        self.calls = 0

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        leaders = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [
            {"topic": name, "error_code": 0, "partitions": [{"leader": leaders[name]}] * 2}
            if name in leaders
            else {"topic": name, "error_code": 3, "partitions": []}
            for name in names
        ]


async def test_waits_until_every_partition_has_a_leader():
    admin = LaggingAdmin([{"a": 1}, {"a": 1, "b": -1}, {"a": 1, "b": 1}])
    assert await wait_for_leaders(admin, ["a", "b"], timeout_seconds=5) == set()
    assert admin.calls == 3


async def test_gives_the_topics_still_without_a_leader_when_time_runs_out():
    admin = LaggingAdmin([{"a": 1, "b": -1}])
    assert await wait_for_leaders(admin, ["a", "b", "c"], timeout_seconds=0.25) == {"b", "c"}
