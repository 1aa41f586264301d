"""Dead-letter headers: names, order and UTF-8 values."""

from __future__ import annotations

from stream_kpis.deadletter import HEADER_NAMES, dead_letter_headers
from stream_kpis.events import Rejection, decode
from tests.event_payloads import NOW, encode, payload


def test_headers_name_reason_field_and_source() -> None:
    rejection = Rejection("score_out_of_range", "score", "expected 0 to 10, got 11")
    headers = dead_letter_headers(rejection, source_topic="surveys-v1", partition=3, offset=1234)
    assert headers == [
        ("reason", b"score_out_of_range"),
        ("field", b"score"),
        ("source_topic", b"surveys-v1"),
        ("source_partition", b"3"),
        ("source_offset", b"1234"),
        ("detail", b"expected 0 to 10, got 11"),
    ]
    assert tuple(name for name, _ in headers) == HEADER_NAMES


def test_a_whole_message_rejection_has_an_empty_field() -> None:
    rejection = Rejection("malformed_json", None, "invalid JSON")
    headers = dict(dead_letter_headers(rejection, source_topic="t", partition=0, offset=0))
    assert headers["field"] == b""
    assert headers["source_partition"] == b"0"


def test_values_are_utf8() -> None:
    rejection = Rejection("invalid_value", "event_id", 'expected 1-128, got "😀é…"')
    headers = dict(dead_letter_headers(rejection, source_topic="évents", partition=1, offset=2))
    assert headers["detail"].decode("utf-8") == 'expected 1-128, got "😀é…"'
    assert headers["source_topic"] == "évents".encode()


def test_text_that_cannot_be_utf8_is_escaped_not_dropped() -> None:
    rejection = Rejection("internal_error", None, "bad \udc80 text")
    headers = dict(dead_letter_headers(rejection, source_topic="t", partition=0, offset=9))
    assert headers["detail"] == b"bad \\udc80 text"


def test_headers_of_a_real_rejection() -> None:
    raw = encode(payload("survey_response", survey="nps", scale=None, score=11))
    rejection = decode(raw, "surveys", now=NOW)
    assert isinstance(rejection, Rejection)
    headers = dict(dead_letter_headers(rejection, source_topic="surveys", partition=7, offset=42))
    assert headers["reason"] == b"score_out_of_range"
    assert headers["field"] == b"score"
    assert headers["detail"].endswith(b"got 11")
    assert (headers["source_partition"], headers["source_offset"]) == (b"7", b"42")
