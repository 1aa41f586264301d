"""Hostile and broken messages: each is rejected with the right reason code and field."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from stream_kpis.events import ContractConfig, Rejection, decode
from tests.event_payloads import NOW, encode, payload, rejected, run, without

VALID = encode(payload("session"))


def check(
    message: dict[str, Any] | bytes | None,
    reason: str,
    field: str | None,
    topic: str | None = None,
    **options: Any,
) -> Rejection:
    result = rejected(message, topic=topic, **options)
    assert (result.reason, result.field) == (reason, field), result
    return result


# -- the message as a whole ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        VALID[:-1],  # truncated
        VALID[: len(VALID) // 2],
        b"{",
        b"",
        b"   ",
        b"{'event_id': 'e-1'}",  # single quotes
        b'{"event_id": "e-1",}',  # trailing comma
        VALID + b"\n{}",  # two objects
        VALID + b" x",
        b"\xef\xbb\xbf" + VALID,  # byte-order mark
        b"{event_id: 1}",
        b'{"a": 1} // comment',
        b'{"a": "\\ud800"}',  # lone surrogate escape
        b'{"a": "tab\there"}',  # raw control character in a string
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b"NaN",
        b"[" * 100_000,
        b"{" * 100_000,
        b'{"a":' * 100_000,
        b"\x00",
    ],
)
def test_malformed_json(raw: bytes) -> None:
    check(raw, "malformed_json", None)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"[]", "an array"),
        (b"[1, 2, 3]", "an array"),
        (b'"session"', "a string"),
        (b"42", "a number"),
        (b"4.2e1", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
        (b"[" + b"9" * 5000 + b"]", "an array"),
        (None, "no value"),
    ],
)
def test_not_an_object(raw: bytes | None, says: str) -> None:
    assert says in check(raw, "not_an_object", None).detail


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",
        VALID.replace(b'"s-1"', b'"s-\xff"'),
        VALID.replace(b'"c-1"', b'"c-\xc3\x28"'),  # bad continuation byte
        VALID.replace(b'"s-1"', b'"\xed\xa0\x80"'),  # a UTF-16 surrogate encoded in UTF-8
        VALID.replace(b'"s-1"', b'"\xc0\xaf"'),  # overlong encoding of "/"
        VALID[:-1] + b', "ignored": "\xff"}',  # even in a field that is not read
        VALID[:-1] + b', "\xff": 1}',  # even in a key
    ],
)
def test_not_utf8(raw: bytes) -> None:
    check(raw, "not_utf8", None)


def test_a_str_with_a_lone_surrogate_is_not_utf8() -> None:
    result = decode('{"a": "\udc80"}', "sessions", now=NOW)  # type: ignore[arg-type]
    assert isinstance(result, Rejection) and result.reason == "not_utf8"


def test_too_large() -> None:
    padding = "x" * 1_048_576
    check(payload("session", padding=padding), "too_large", None)
    config = ContractConfig(max_message_bytes=len(VALID))
    assert run(VALID, config=config).__class__.__name__ == "Event"  # exactly the limit
    check(VALID + b" ", "too_large", None, config=config)


def test_multi_megabyte_values_within_the_limit() -> None:
    config = ContractConfig(max_message_bytes=8_000_000)
    huge_id = "e" * 3_000_000
    result = check(payload("session", event_id=huge_id), "invalid_value", "event_id", config=config)
    assert len(result.detail) < 200
    check(
        payload("subscription_started", mrr="9" * 3_000_000),
        "invalid_amount",
        "mrr",
        config=config,
    )
    big_ignored = payload("session", blob=["x" * 1000] * 3000)
    assert run(big_ignored, config=config).__class__.__name__ == "Event"


@pytest.mark.parametrize("depth", [64, 65, 1000])
def test_nesting_limit_is_exact(depth: int) -> None:
    # The event object is level 1; `blob` adds depth - 1 levels of arrays.
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    raw = VALID[:-1] + f', "blob": {inner}}}'.encode()
    result = run(raw, topic="sessions")
    if depth <= 64:
        assert result.__class__.__name__ == "Event"
    else:
        assert isinstance(result, Rejection)
        assert (result.reason, result.field) == ("malformed_json", None)


@pytest.mark.parametrize(("pairs", "accepted"), [(31, True), (32, False)])
def test_nesting_of_objects_and_arrays_counts_both(pairs: int, accepted: bool) -> None:
    # Level 1 is the event, then `pairs` times an array holding an object, then one array.
    inner = '[{"b":' * pairs + "[1]" + "}]" * pairs
    raw = VALID[:-1] + f', "blob": {inner}}}'.encode()
    result = run(raw, topic="sessions")
    depth = 1 + 2 * pairs + 1
    assert (result.__class__.__name__ == "Event") == accepted == (depth <= 64)


def test_nesting_outcome_does_not_depend_on_the_callers_stack() -> None:
    raw = VALID[:-1] + (', "blob": ' + "[" * 63 + "]" * 63 + "}").encode()

    def decode_from_depth(frames: int) -> object:
        return decode_from_depth(frames - 1) if frames else run(raw, topic="sessions")

    assert run(raw, topic="sessions").__class__.__name__ == "Event"
    assert decode_from_depth(500).__class__.__name__ == "Event"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 1000 + b"}" * 1000,  # mismatched
        b'{"a":' * 100_000,
        b'{"a": "' + b"[" * 1000,  # unterminated string
        b'{"a": [' + b"[" * 1000 + b'"]}',
    ],
)
def test_malformed_deep_nesting(raw: bytes) -> None:
    check(raw, "malformed_json", None)


def test_escaped_quotes_and_backslashes_do_not_end_strings() -> None:
    brackets = "[" * 100
    for text in (f'\\"{brackets}', f'\\\\{brackets}\\"', f"\\u0022{brackets}"):
        raw = VALID[:-1] + f', "note": "{text}"}}'.encode()
        assert run(raw, topic="sessions").__class__.__name__ == "Event", text


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    raw = encode(payload("session", note="[" * 10_000, other="{" * 500))
    assert run(raw).__class__.__name__ == "Event"


def test_many_shallow_arrays_are_fine() -> None:
    assert run(payload("session", blob=[[1]] * 5000)).__class__.__name__ == "Event"


# -- type and topic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (without("session", "type"), "missing_field"),
        (payload("session", type=None), "missing_field"),
        (payload("session", type=["session"]), "wrong_type"),
        (payload("session", type=1), "wrong_type"),
        (payload("session", type="login"), "unknown_type"),
        (payload("session", type=""), "unknown_type"),
        (payload("session", type="Session"), "unknown_type"),
        (payload("session", type="session "), "unknown_type"),
    ],
)
def test_bad_types(message: dict[str, Any], reason: str) -> None:
    check(message, reason, "type", topic="sessions")


@pytest.mark.parametrize(
    ("kind", "topic"),
    [
        ("purchase", "sessions"),
        ("session", "subscriptions"),
        ("survey_response", "subscriptions"),
        ("subscription_started", "surveys"),
        ("referral", "sessions"),
    ],
)
def test_a_type_on_the_wrong_topic(kind: str, topic: str) -> None:
    result = check(payload(kind), "wrong_topic", "type", topic=topic)
    assert topic in result.detail


# -- ids and strings -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["event_id", "customer_id", "session_id", "program"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "invalid_value"),
        ("x" * 129, "invalid_value"),
        ("x" * 5000, "invalid_value"),
        ("😀" * 129, "invalid_value"),
        (["a"], "wrong_type"),
        ({"id": "a"}, "wrong_type"),
        (42, "wrong_type"),
        (4.2, "wrong_type"),
        (True, "wrong_type"),
    ],
)
def test_bad_strings(field: str, value: Any, reason: str) -> None:
    check(payload("session", **{field: value}), reason, field)


def test_id_lengths_are_code_points() -> None:
    assert run(payload("session", event_id="😀" * 128)).__class__.__name__ == "Event"
    assert run(payload("session", event_id="x" * 128)).__class__.__name__ == "Event"
    check(payload("session", event_id="😀" * 129), "invalid_value", "event_id")
    # 64 characters but 256 bytes of UTF-8: fine.
    assert run(payload("session", event_id="😀" * 64)).__class__.__name__ == "Event"


def test_long_values_are_cut_in_the_detail() -> None:
    result = check(payload("session", event_id="x" * 5000), "invalid_value", "event_id")
    assert "5000" in result.detail
    assert len(result.detail) < 150


def test_subject_is_required() -> None:
    check(without("session", "customer_id"), "missing_field", "customer_id")
    check(payload("session", customer_id=None, visitor_id=None), "missing_field", "customer_id")


def test_a_bad_customer_id_does_not_fall_back_to_visitor_id() -> None:
    check(payload("session", customer_id="", visitor_id="v-1"), "invalid_value", "customer_id")
    check(payload("session", customer_id=7, visitor_id="v-1"), "wrong_type", "customer_id")


def test_bad_visitor_id() -> None:
    check(without("session", "customer_id", visitor_id=""), "invalid_value", "visitor_id")
    check(without("session", "customer_id", visitor_id=[1]), "wrong_type", "visitor_id")


def test_reserved_program() -> None:
    check(payload("session", program="all"), "reserved_program", "program")


def test_an_empty_object() -> None:
    for topic in ("sessions", "subscriptions", "surveys"):
        check(b"{}", "missing_field", "type", topic=topic)


def test_missing_event_id() -> None:
    check(without("session", "event_id"), "missing_field", "event_id")
    check(payload("session", event_id=None), "missing_field", "event_id")


# -- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2023-02-30T00:00:00Z",  # impossible date
        "2023-02-29T00:00:00Z",  # not a leap year
        "2026-01-30T25:00:00Z",
        "2026-01-30T12:00:00",  # naive
        "2026-01-30",
        "yesterday",
        "",
        "1769774400",  # epoch as a string
        "2026-01-30T12:00:00+05:60",
        "2026-01-30T12:00:00+24:00",
        10**400,
    ],
)
def test_invalid_timestamps(value: Any) -> None:
    check(payload("session", occurred_at=value), "invalid_timestamp", "occurred_at")


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"9" * 5000])
def test_epoch_numbers_beyond_a_double_are_invalid(literal: bytes) -> None:
    raw = encode(payload("session", occurred_at="T")).replace(b'"T"', literal)
    check(raw, "invalid_timestamp", "occurred_at", topic="sessions")


@pytest.mark.parametrize("value", [True, False, ["2026-01-30T12:00:00Z"], {"t": 1}])
def test_timestamps_of_the_wrong_type(value: Any) -> None:
    check(payload("session", occurred_at=value), "wrong_type", "occurred_at")


def test_missing_occurred_at() -> None:
    check(without("session", "occurred_at"), "missing_field", "occurred_at")


@pytest.mark.parametrize(
    "value",
    [
        "1999-12-31T23:59:59Z",
        "2000-01-01T05:29:59+05:30",
        0,
        -1,
        946684799,
        946684799999,
        -(10**15),
    ],
)
def test_timestamps_before_2000(value: Any) -> None:
    check(payload("session", occurred_at=value), "timestamp_too_old", "occurred_at")


@pytest.mark.parametrize(
    "value",
    [
        NOW + 86400 + 1,
        (NOW + 86400 + 1) * 1000,
        "2026-02-01T00:00:01Z",
        "2026-02-01T05:30:01+05:30",
        99_999_999_999,  # just under the millisecond threshold: seconds, year 5138
        1e300,
    ],
)
def test_timestamps_too_far_ahead_of_the_clock(value: Any) -> None:
    check(payload("session", occurred_at=value), "timestamp_in_future", "occurred_at")


def test_skew_is_configurable() -> None:
    config = ContractConfig(max_skew_seconds=60)
    check(
        payload("session", occurred_at=NOW + 61),
        "timestamp_in_future",
        "occurred_at",
        config=config,
    )


@pytest.mark.parametrize("field", ["started_at", "ended_at"])
def test_session_times_get_the_same_checks(field: str) -> None:
    check(payload("session", **{field: "1999-01-01T00:00:00Z"}), "timestamp_too_old", field)
    check(payload("session", **{field: NOW + 10 * 86400}), "timestamp_in_future", field)
    check(payload("session", **{field: "2026-02-30T00:00:00Z"}), "invalid_timestamp", field)
    check(payload("session", **{field: "noon"}), "invalid_timestamp", field)
    check(payload("session", **{field: True}), "wrong_type", field)


# -- sessions ------------------------------------------------------------------------------------


def test_end_before_start_with_or_without_duration() -> None:
    late_start = {"started_at": "2026-01-30T12:00:01Z", "ended_at": "2026-01-30T12:00:00Z"}
    check(payload("session", **late_start), "end_before_start", "ended_at")
    check(payload("session", duration_seconds=5, **late_start), "end_before_start", "ended_at")
    # The same instants in other forms and offsets.
    mixed = {"started_at": "2026-01-30T17:30:01+05:30", "ended_at": 1769774400000}
    check(payload("session", **mixed), "end_before_start", "ended_at")


def test_session_needs_a_duration_or_both_times() -> None:
    check(without("session", "started_at", "ended_at"), "missing_field", "duration_seconds")
    check(without("session", "started_at"), "missing_field", "started_at")
    check(without("session", "ended_at"), "missing_field", "ended_at")
    check(payload("session", started_at=None, ended_at=None), "missing_field", "duration_seconds")


@pytest.mark.parametrize(
    ("raw_value", "reason"),
    [
        (b"-1", "invalid_amount"),
        (b"-0.001", "invalid_amount"),
        (b"1e999", "invalid_amount"),
        (b"9" * 4000, "invalid_amount"),
        (b"9" * 5000, "invalid_amount"),  # too many digits for Python's int()
        (b'"60"', "wrong_type"),
        (b"true", "wrong_type"),
        (b"[60]", "wrong_type"),
        (b"NaN", "malformed_json"),
        (b"Infinity", "malformed_json"),
    ],
)
def test_bad_durations(raw_value: bytes, reason: str) -> None:
    raw = encode(payload("session", duration_seconds="D")).replace(b'"D"', raw_value)
    field = None if reason == "malformed_json" else "duration_seconds"
    check(raw, reason, field, topic="sessions")


@pytest.mark.parametrize("field", ["converted", "goal_reached"])
@pytest.mark.parametrize("value", ["true", 1, 0, [True], {}])
def test_flags_must_be_booleans(field: str, value: Any) -> None:
    check(payload("session", **{field: value}), "wrong_type", field)
    check(payload("session_ended", **{field: value}), "wrong_type", field)


def test_session_parts_need_a_session_id() -> None:
    for kind in ("session_started", "session_heartbeat", "session_ended"):
        check(without(kind, "session_id"), "missing_field", "session_id")
        check(payload(kind, session_id=""), "invalid_value", "session_id")


# -- money and currency --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e3", "invalid_value"),
        ("-1", "invalid_amount"),
        ("-0.01", "invalid_amount"),
        ("NaN", "invalid_amount"),
        ("nan", "invalid_amount"),
        ("Infinity", "invalid_amount"),
        ("-inf", "invalid_amount"),
        ("١٢", "invalid_value"),  # Arabic-Indic digits
        ("１２", "invalid_value"),  # full-width digits
        ("12,50", "invalid_value"),
        ("$12", "invalid_value"),
        (" 12", "invalid_value"),
        ("12 ", "invalid_value"),
        ("+12", "invalid_value"),
        (".5", "invalid_value"),
        ("5.", "invalid_value"),
        ("1_000", "invalid_value"),
        ("0x10", "invalid_value"),
        ("", "invalid_value"),
        ("-", "invalid_value"),
        (-1, "invalid_amount"),
        (-0.5, "invalid_amount"),
        (1e308, "invalid_amount"),
        (10**15, "invalid_amount"),
        ("1000000000000000.00", "invalid_amount"),
        (1.7e307, "invalid_amount"),
        (10**400, "invalid_amount"),
        ("9" * 400, "invalid_amount"),
        (True, "wrong_type"),
        (["12"], "wrong_type"),
        ({"value": 12}, "wrong_type"),
    ],
)
@pytest.mark.parametrize(
    ("kind", "field"), [("purchase", "amount"), ("subscription_started", "mrr")]
)
def test_bad_money(kind: str, field: str, value: Any, reason: str) -> None:
    check(payload(kind, **{field: value}), reason, field)


def test_money_just_below_the_bound_is_exact() -> None:
    event = run(payload("purchase", amount="999999999999999.99"))
    assert getattr(event, "amount", None) == Decimal("999999999999999.99")


@pytest.mark.parametrize("seconds", [1e9 + 1, 1.7e308, 10**12])
def test_durations_beyond_any_real_session_are_invalid_amounts(seconds: Any) -> None:
    result = check(
        payload("session", duration_seconds=seconds), "invalid_amount", "duration_seconds"
    )
    assert "1e+09" in result.detail


def test_a_duration_at_the_bound_is_accepted() -> None:
    assert getattr(run(payload("session", duration_seconds=10**9)), "duration_seconds", None) == 1e9


def test_money_detail_names_the_value() -> None:
    result = check(payload("purchase", amount="1e3"), "invalid_value", "amount")
    assert '"1e3"' in result.detail


def test_required_money() -> None:
    check(without("purchase", "amount"), "missing_field", "amount")
    check(without("subscription_started", "mrr"), "missing_field", "mrr")
    check(without("subscription_changed", "mrr"), "missing_field", "mrr")
    check(without("purchase", "order_id"), "missing_field", "order_id")


def test_bad_optional_subscription_fields() -> None:
    check(payload("subscription_started", plan=3), "wrong_type", "plan")
    check(payload("subscription_started", plan=""), "invalid_value", "plan")
    check(payload("subscription_changed", subscription_id=[]), "wrong_type", "subscription_id")
    check(payload("subscription_cancelled", reason=5), "wrong_type", "reason")
    check(payload("subscription_cancelled", involuntary="no"), "wrong_type", "involuntary")


@pytest.mark.parametrize("currency", ["XYZ", "EUR", "", "US D", "usd "])
def test_unknown_currency(currency: str) -> None:
    check(payload("purchase", currency=currency), "unknown_currency", "currency")


def test_currency_of_the_wrong_type() -> None:
    check(payload("purchase", currency=840), "wrong_type", "currency")


def test_conversion_that_overflows_is_an_invalid_amount() -> None:
    config = ContractConfig(exchange_rates={"ZWL": Decimal("1e300")})
    check(
        payload("purchase", amount=1e10, currency="ZWL"), "invalid_amount", "amount", config=config
    )


def test_currency_conversion_happens_only_with_a_rate() -> None:
    config = ContractConfig(exchange_rates={"EUR": Decimal("1.5")})
    assert rejected(payload("purchase", currency="JPY"), config=config).reason == "unknown_currency"
    event = run(payload("purchase", amount="10.10", currency="EUR"), config=config)
    assert getattr(event, "amount", None) == Decimal("15.15")


# -- surveys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"survey": "foo"}, "invalid_value", "survey"),
        ({"survey": "CSAT"}, "invalid_value", "survey"),
        ({"survey": 1}, "wrong_type", "survey"),
        ({"survey": None}, "missing_field", "survey"),
        ({"scale": "1-7"}, "invalid_value", "scale"),
        ({"scale": "0-10"}, "invalid_value", "scale"),  # CSAT is on 1-5 only
        ({"scale": 5}, "wrong_type", "scale"),
        ({"score": None}, "missing_field", "score"),
        ({"score": True}, "wrong_type", "score"),
        ({"score": False}, "wrong_type", "score"),
        ({"score": 4.5}, "invalid_value", "score"),
        ({"score": "4"}, "wrong_type", "score"),
        ({"score": [4]}, "wrong_type", "score"),
        ({"score": 0}, "score_out_of_range", "score"),
        ({"score": 6}, "score_out_of_range", "score"),
        ({"score": -1}, "score_out_of_range", "score"),
        ({"score": 10**30}, "score_out_of_range", "score"),
        ({"score": 1e300}, "score_out_of_range", "score"),
        ({"survey": "nps", "scale": None, "score": 11}, "score_out_of_range", "score"),
        ({"survey": "nps", "scale": None, "score": -1}, "score_out_of_range", "score"),
        ({"survey": "nps", "scale": "1-5", "score": 0}, "score_out_of_range", "score"),
        ({"survey": "nps", "scale": "1-5", "score": 9}, "score_out_of_range", "score"),
        ({"comment": 5}, "wrong_type", "comment"),
        ({"comment": ["secret words"]}, "wrong_type", "comment"),
    ],
)
def test_bad_survey_responses(fields: dict[str, Any], reason: str, field: str) -> None:
    check(payload("survey_response", **fields), reason, field)


def test_a_score_with_5000_digits() -> None:
    raw = encode(payload("survey_response", score="S")).replace(b'"S"', b"9" * 5000)
    result = check(raw, "score_out_of_range", "score", topic="surveys")
    assert len(result.detail) < 200


def test_a_contract_field_holding_a_nested_huge_integer() -> None:
    raw = encode(payload("survey_response", score="S")).replace(b'"S"', b"[" + b"9" * 5000 + b"]")
    check(raw, "wrong_type", "score", topic="surveys")
    # In a field the type does not read, it is ignored like any other unknown field.
    raw = encode(payload("referral", score="S")).replace(b'"S"', b"9" * 5000)
    assert run(raw, topic="surveys").__class__.__name__ == "Event"


def test_the_comment_never_reaches_a_detail() -> None:
    secret = "call me on 555-0100"
    for fields in (
        {"score": 99, "comment": secret},
        {"comment": [secret]},
        {"comment": {"a": secret}},
    ):
        result = rejected(payload("survey_response", **fields))
        assert secret not in result.detail
        assert secret not in repr(result)


# -- never raises --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00" * 1000,
        bytes(range(256)),
        json.dumps({"type": "session", "event_id": {"$gt": ""}}).encode(),
        b'{"type": "session", "__proto__": {"admin": true}}',
        b'{"type":"session","event_id":"e","occurred_at":"' + b"9" * 100_000 + b'"}',
        b'{"type":"session","event_id":"e","occurred_at":"2026-01-30T12:00:00.'
        + b"9" * 100_000
        + b'Z","customer_id":"c","duration_seconds":1,"session_id":"s"}',
    ],
)
def test_odd_inputs_end_in_a_rejection_or_an_event(raw: bytes) -> None:
    for topic in ("sessions", "subscriptions", "surveys"):
        result = decode(raw, topic, now=NOW)
        assert result.__class__.__name__ in ("Event", "Rejection")
        if isinstance(result, Rejection):
            assert result.reason != "internal_error", result
