"""Connecting to Kafka: why a client could not connect, and waiting until new topics serve.

aiokafka raises the same `KafkaConnectionError: Unable to bootstrap from [...]` whether nothing
listens at the address, the TLS handshake failed or the broker refused the credentials; the
cause is only in the error it logs just before ("Unable connect to ...: <cause>"). The worker
and `produce` collect those log records while they connect and turn the last one into advice.

A topic just created is not at once in every broker's metadata: a consumer group assigned
in between leaves it out of the assignment, and a producer waits for it. `wait_for_leaders`
returns once every partition of the topics has a leader in the metadata.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

_CLIENT_LOGGER = "aiokafka"
_CONNECT_FAILED = "Unable connect to"

# (what the cause contains, what it means, what to check), first match wins.
_ADVICE = (
    (
        ("certificate verify failed", "[ssl", "sslerror", "wrong version number"),
        "the TLS handshake failed",
        "check STREAM_KPIS_SSL_CAFILE (the CA that signed the broker's certificate) and the "
        "client certificate settings",
    ),
    (
        ("saslauthenticationfailed", "authentication failed", "unsupportedsaslmechanism"),
        "the broker refused the credentials",
        "check STREAM_KPIS_SASL_USERNAME, STREAM_KPIS_SASL_PASSWORD (or _FILE) and "
        "STREAM_KPIS_SASL_MECHANISM",
    ),
    (
        # getaddrinfo's texts on glibc, musl and macOS, and Windows' name for the failure
        (
            "name or service not known",
            "temporary failure in name resolution",
            "no address associated with hostname",
            "name does not resolve",
            "nodename nor servname",
            "getaddrinfo failed",
        ),
        "the host does not resolve",
        "check the host names in STREAM_KPIS_BOOTSTRAP_SERVERS (or --bootstrap-servers)",
    ),
    (
        ("connect call failed", "errno 111", "connection refused"),
        "nothing accepts connections there",
        "start a broker (stream-kpis services up) or set STREAM_KPIS_BOOTSTRAP_SERVERS",
    ),
    (
        ("closed",),
        "the broker closed the connection",
        "the listener may expect another protocol: check STREAM_KPIS_SECURITY_PROTOCOL",
    ),
    (
        # What a listener of another protocol (HTTP, SSH) gives when it waits for more input.
        ("timeouterror", "timed out"),
        "nothing answered as a Kafka broker in time",
        "check that STREAM_KPIS_BOOTSTRAP_SERVERS names Kafka listeners reachable from here",
    ),
)
_DEFAULT_ADVICE = (
    "check STREAM_KPIS_BOOTSTRAP_SERVERS and, on a secured cluster, "
    "STREAM_KPIS_SECURITY_PROTOCOL and the TLS and SASL settings"
)


class _ConnectFailures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith(_CONNECT_FAILED):
            return
        # 'Unable connect to "host:port": <cause>', the cause being the last argument
        error = record.args[-1] if isinstance(record.args, tuple) and record.args else None
        if isinstance(error, BaseException):
            self.causes.append(error_text(error))
        else:
            self.causes.append(message.partition(": ")[2].strip() or message)


def error_text(error: BaseException) -> str:
    """The error's text, or its class name when the text is empty (a bare `TimeoutError()`)."""
    return str(error).strip() or type(error).__name__


@contextmanager
def connect_failures() -> Iterator[list[str]]:
    """Collect the causes the Kafka client logs for failed connections in this block."""
    handler = _ConnectFailures()
    logger = logging.getLogger(_CLIENT_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.causes
    finally:
        logger.removeHandler(handler)


def cannot_connect(bootstrap_servers: str, error: BaseException, causes: list[str]) -> str:
    """One line: the address, what went wrong and what to check."""
    name, text = type(error).__name__, error_text(error)
    cause = causes[-1] if causes else (name if text == name else f"{name}: {text}")
    lowered = cause.lower()
    for needles, meaning, advice in _ADVICE:
        if any(needle in lowered for needle in needles):
            return f"cannot connect to Kafka at {bootstrap_servers}: {meaning} ({cause}); {advice}"
    return f"cannot connect to Kafka at {bootstrap_servers} ({cause}); {_DEFAULT_ADVICE}"


async def wait_for_leaders(admin: Any, names: Collection[str], timeout_seconds: float) -> set[str]:
    """Wait until every partition of the topics has a leader; return those still without
    one when `timeout_seconds` ran out (empty when all are ready)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    wanted = set(names)
    while True:
        topics = await admin.describe_topics(sorted(wanted))
        ready = {
            topic["topic"]
            for topic in topics
            if topic["error_code"] == 0
            and topic["partitions"]
            and all(part["leader"] >= 0 for part in topic["partitions"])
        }
        if ready >= wanted or loop.time() > deadline:
            return wanted - ready
        await asyncio.sleep(0.1)
