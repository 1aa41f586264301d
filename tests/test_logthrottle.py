"""Repeating third-party log lines are held back; stream-kpis' own lines never are."""

from __future__ import annotations

import logging

import pytest

from stream_kpis.logthrottle import RepeatThrottle, throttle_handlers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def setup():
    clock = Clock()
    handler = Collect()
    handler.addFilter(RepeatThrottle(30.0, clock=clock))
    log = logging.getLogger("tests.logthrottle.aiokafka")
    log.addHandler(handler)
    log.propagate = False
    yield clock, handler, log
    log.removeHandler(handler)


def test_a_repeating_error_shows_once_per_interval_with_a_count(setup):
    clock, handler, log = setup

    for node in range(100):
        log.error("Unable connect to node with id %s: %s", node % 3, "refused")
        clock.now += 0.01
    clock.now += 30
    log.error("Unable connect to node with id %s: %s", 1, "refused")

    assert handler.lines == [
        "Unable connect to node with id 0: refused",
        "Unable connect to node with id 1: refused [99 more like this held back in the last 31 s]",
    ]


def test_different_messages_are_throttled_apart(setup):
    _, handler, log = setup

    log.error("Unable to update metadata from %s", [1])
    log.error("Failed fetch messages from %s", 1)
    log.error("Unable to update metadata from %s", [1])
    log.warning("producer buffer full size 115")
    log.warning("producer buffer full size 230")

    assert handler.lines == [
        "Unable to update metadata from [1]",
        "Failed fetch messages from 1",
        "producer buffer full size 115",
    ]


def test_own_log_lines_are_never_held_back():
    handler = Collect()
    handler.addFilter(RepeatThrottle(30.0, clock=Clock()))
    own = logging.getLogger("stream_kpis.tests_logthrottle")
    own.addHandler(handler)
    own.setLevel(logging.INFO)
    own.propagate = False
    try:
        for partition in (1, 1, 1):
            own.info("partition %d revoked", partition)
    finally:
        own.removeHandler(handler)

    assert handler.lines == ["partition 1 revoked"] * 3


def test_lifecycle_info_lines_all_show_but_noisy_ones_are_throttled():
    clock = Clock()
    handler = Collect()
    handler.addFilter(RepeatThrottle(30.0, clock=clock))
    recovery = logging.getLogger("tests.logthrottle.faust.tables.recovery")
    producer = logging.getLogger("faust.transport.producer")
    for log in (recovery, producer):
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        for flush_seconds in (0.1, 0.2, 0.3):
            recovery.info("Worker ready")
            producer.info("producer flush took %s", flush_seconds)
    finally:
        for log in (recovery, producer):
            log.removeHandler(handler)

    assert handler.lines == [
        "Worker ready",
        "producer flush took 0.1",
        "Worker ready",
        "Worker ready",
    ]


def test_every_handler_gets_the_same_decision():
    root = logging.Logger("root-for-test")
    first, second = Collect(), Collect()
    root.addHandler(first)
    root.addHandler(second)
    throttle_handlers(30.0, root=root)

    for _ in range(3):
        root.error("broker down")

    assert first.lines == second.lines == ["broker down"]
