"""The event contract v1: what a valid message of each type becomes, and the contract's rules."""

from __future__ import annotations

import calendar
import dataclasses
import re
from decimal import Decimal
from pathlib import Path

import pytest

from stream_kpis.errors import ConfigError
from stream_kpis.events import (
    REASON_CODES,
    TYPES_BY_TOPIC,
    ContractConfig,
    Event,
    Rejection,
    decode,
)
from tests.event_payloads import (
    NOON,
    NOW,
    TOPIC,
    accepted,
    encode,
    payload,
    rejected,
    run,
    without,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "events.md"


def utc(*parts: int) -> float:
    return float(calendar.timegm((*parts, 0, 0, 0, 0)[:6]))  # type: ignore[arg-type]


# -- every type ----------------------------------------------------------------------------------


def test_a_session_with_start_and_end() -> None:
    event = accepted(payload("session"))
    assert event == Event(
        event_id="e-1",
        type="session",
        topic="sessions",
        occurred_at=NOON,
        subject="c-1",
        program="default",
        session_id="s-1",
        duration_seconds=600.0,
        started_at=NOON - 600,
        ended_at=NOON,
        converted=True,
        goal_reached=False,
    )
    assert event.time == NOON


def test_a_session_with_a_duration_only_counts_at_occurred_at() -> None:
    event = accepted(without("session", "started_at", "ended_at", duration_seconds=312))
    assert event.duration_seconds == 312.0
    assert (event.started_at, event.ended_at) == (None, None)
    assert event.time == event.occurred_at == NOON


def test_duration_wins_over_start_and_end() -> None:
    event = accepted(payload("session", duration_seconds=90.5))
    assert event.duration_seconds == 90.5
    assert event.ended_at == NOON


def test_session_time_is_its_end_even_when_occurred_at_differs() -> None:
    event = accepted(payload("session", occurred_at="2026-01-30T13:00:00Z"))
    assert event.occurred_at == NOON + 3600
    assert event.time == NOON


def test_a_zero_length_session() -> None:
    noon_ms = int(NOON) * 1000
    event = accepted(payload("session", started_at=noon_ms, ended_at=noon_ms))
    assert event.duration_seconds == 0.0


@pytest.mark.parametrize("kind", ["session_started", "session_heartbeat"])
def test_session_parts(kind: str) -> None:
    event = accepted(payload(kind))
    assert (event.type, event.topic, event.session_id) == (kind, "sessions", "s-1")
    assert (event.converted, event.goal_reached) == (None, None)


def test_session_ended_carries_outcomes() -> None:
    event = accepted(payload("session_ended"))
    assert (event.converted, event.goal_reached) == (False, True)


def test_session_parts_ignore_fields_of_other_types() -> None:
    event = accepted(payload("session_started", converted="yes", duration_seconds=-5, mrr=[]))
    assert event.converted is None
    assert event.duration_seconds is None
    assert event.mrr is None


def test_subscription_started() -> None:
    event = accepted(payload("subscription_started"))
    assert (event.subscription_id, event.mrr, event.plan) == ("sub-1", Decimal("49.90"), "pro")
    assert event.topic == "subscriptions"


def test_subscription_id_is_optional() -> None:
    assert accepted(without("subscription_started", "subscription_id")).subscription_id is None


def test_subscription_changed_and_renewed() -> None:
    assert accepted(payload("subscription_changed")).mrr == Decimal(59)
    assert accepted(payload("subscription_renewed")).mrr == Decimal("59.5")
    assert accepted(without("subscription_renewed", "mrr")).mrr is None


def test_subscription_cancelled() -> None:
    event = accepted(payload("subscription_cancelled", involuntary=True))
    assert (event.reason, event.involuntary) == ("too expensive", True)
    long_reason = "x" * 5000  # free text, not an identifier: any length
    assert accepted(payload("subscription_cancelled", reason=long_reason)).reason == long_reason


def test_purchase() -> None:
    event = accepted(payload("purchase"))
    assert (event.order_id, event.amount) == ("o-1", Decimal("12.00"))


@pytest.mark.parametrize(
    ("survey", "scale", "score", "stored_scale"),
    [
        ("csat", None, 5, "1-5"),
        ("csat", "1-5", 1, "1-5"),
        ("nps", None, 10, "0-10"),
        ("nps", None, 0, "0-10"),
        ("nps", "0-10", 7, "0-10"),
        ("nps", "1-5", 4, "1-5"),
    ],
)
def test_survey_response(survey: str, scale: str | None, score: int, stored_scale: str) -> None:
    event = accepted(payload("survey_response", survey=survey, scale=scale, score=score))
    assert (event.survey, event.scale, event.score) == (survey, stored_scale, score)
    assert type(event.score) is int


def test_an_integral_number_is_an_integer() -> None:
    event = accepted(payload("survey_response", score=4.0))
    assert event.score == 4 and type(event.score) is int
    assert accepted(payload("survey_response", survey="nps", scale=None, score=1e1)).score == 10


def test_the_comment_is_never_kept() -> None:
    secret = "my card number is 4111"
    result = accepted(payload("survey_response", comment=secret))
    assert secret not in repr(result)
    assert all(secret not in str(value) for value in dataclasses.astuple(result))


def test_referral() -> None:
    event = accepted(payload("referral"))
    assert (event.type, event.topic, event.subject) == ("referral", "surveys", "c-1")


def test_every_type_has_a_payload_here() -> None:
    assert set(TOPIC) == set().union(*TYPES_BY_TOPIC.values())
    for kind, topic in TOPIC.items():
        assert kind in TYPES_BY_TOPIC[topic]


# -- fields every event has ----------------------------------------------------------------------


def test_customer_id_wins_over_visitor_id() -> None:
    assert accepted(payload("referral", visitor_id="v-9")).subject == "c-1"


def test_visitor_id_is_the_subject_without_customer_id() -> None:
    assert accepted(without("session", "customer_id", visitor_id="v-9")).subject == "v-9"
    assert accepted(payload("session", customer_id=None, visitor_id="v-9")).subject == "v-9"


def test_visitor_id_is_not_looked_at_when_customer_id_is_there() -> None:
    assert accepted(payload("referral", visitor_id=12)).subject == "c-1"


def test_program_defaults_and_names() -> None:
    assert accepted(payload("referral")).program == "default"
    assert accepted(payload("referral", program=None)).program == "default"
    assert accepted(payload("referral", program="web")).program == "web"
    assert accepted(payload("referral", program="All")).program == "All"  # only "all" is taken


def test_ids_are_counted_in_code_points() -> None:
    emoji_id = "😀" * 128  # 512 bytes of UTF-8, 128 characters
    assert accepted(payload("referral", event_id=emoji_id)).event_id == emoji_id
    assert accepted(payload("referral", customer_id="é" * 128)).subject == "é" * 128


def test_timestamps_in_every_form_normalise_to_the_same_utc_seconds() -> None:
    forms = [
        "2026-01-30T12:00:00Z",
        "2026-01-30T17:30:00+05:30",
        "2026-01-30T07:00:00-05:00",
        "2026-01-30 12:00:00z",
        int(NOON),
        int(NOON) * 1000,
        NOON + 0.0,
        NOON * 1000.0,
    ]
    for form in forms:
        assert accepted(payload("referral", occurred_at=form)).occurred_at == NOON, form


def test_fractions_of_a_second_agree_between_text_seconds_and_milliseconds() -> None:
    text = accepted(payload("referral", occurred_at="2026-01-30T12:00:00.123Z")).occurred_at
    millis = accepted(payload("referral", occurred_at=int(NOON) * 1000 + 123)).occurred_at
    seconds = accepted(
        encode(payload("referral")).replace(b'"2026-01-30T12:00:00Z"', f"{int(NOON)}.123".encode())
    )
    assert text == millis == seconds.occurred_at


def test_the_clock_bounds_timestamps() -> None:
    skew = 86400.0
    assert accepted(payload("referral", occurred_at=NOW + skew)).occurred_at == NOW + skew
    assert accepted(payload("referral", occurred_at="2000-01-01T00:00:00Z")).occurred_at == utc(
        2000, 1, 1
    )
    config = ContractConfig(max_skew_seconds=0)
    assert accepted(payload("referral", occurred_at=NOW), config=config).occurred_at == NOW


def test_unknown_fields_are_ignored() -> None:
    message = payload("referral", extra={"nested": [1, 2, {"deep": None}]}, score="not mine")
    assert accepted(message).score is None


def test_a_huge_number_in_an_unknown_field_is_ignored() -> None:
    raw = encode(payload("referral"))[:-1] + b', "big": ' + b"9" * 5000 + b"}"
    assert accepted(raw, topic="surveys").type == "referral"


def test_nulls_are_absent_fields() -> None:
    event = accepted(
        payload(
            "subscription_started",
            subscription_id=None,
            plan=None,
            currency=None,
            program=None,
            visitor_id=None,
        )
    )
    assert (event.subscription_id, event.plan, event.program) == (None, None, "default")


def test_the_last_of_repeated_keys_counts() -> None:
    raw = encode(payload("referral"))[:-1] + b', "program": "second"}'
    raw = raw.replace(b'"type"', b'"program": "first", "type"', 1)
    assert accepted(raw).program == "second"


def test_str_and_bytearray_values_are_read_as_utf8() -> None:
    raw = encode(payload("referral"))
    for value in (raw.decode("utf-8"), bytearray(raw), memoryview(raw)):
        assert isinstance(decode(value, "surveys", now=NOW), Event)  # type: ignore[arg-type]


# -- money ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (b'"49.90"', Decimal("49.90")),
        (b'"49"', Decimal(49)),
        (b'"0"', Decimal(0)),
        (b'"007.50"', Decimal("7.5")),
        (b"49.9", Decimal("49.9")),
        (b"49.90", Decimal("49.90")),
        (b"0.1", Decimal("0.1")),
        (b"1e3", Decimal(1000)),
        (b"1E-2", Decimal("0.01")),
        (b"123456789012345.123456789", Decimal("123456789012345.123456789")),
        (b"-0", Decimal(0)),
        (b"-0.0", Decimal(0)),
        (b"0", Decimal(0)),
    ],
)
def test_money_is_exact(written: bytes, expected: Decimal) -> None:
    raw = encode(payload("purchase", amount="AMOUNT")).replace(b'"AMOUNT"', written)
    amount = accepted(raw).amount
    assert amount == expected
    assert amount is not None and not amount.is_signed()


def test_currency_is_converted_with_the_configured_rate() -> None:
    config = ContractConfig(exchange_rates={"EUR": Decimal("1.0825"), "gbp": Decimal("1.27")})
    eur = accepted(payload("purchase", amount="100.00", currency="EUR"), config=config)
    assert eur.amount == Decimal("108.25")
    gbp = accepted(payload("subscription_started", mrr=10, currency="GBP"), config=config)
    assert gbp.mrr == Decimal("12.70")
    lower = accepted(payload("subscription_changed", mrr="2", currency="eur"), config=config)
    assert lower.mrr == Decimal("2.165")


def test_the_reporting_currency_is_not_converted_in_any_case() -> None:
    config = ContractConfig(reporting_currency="eur", exchange_rates={"USD": Decimal("0.9")})
    assert accepted(payload("purchase", currency="EUR"), config=config).amount == Decimal(12)
    assert accepted(payload("purchase", currency="Eur"), config=config).amount == Decimal(12)
    assert accepted(payload("purchase", currency="usd"), config=config).amount == Decimal("10.8")


def test_a_currency_without_an_amount_is_still_checked() -> None:
    result = rejected(without("subscription_renewed", "mrr", currency="XYZ"))
    assert (result.reason, result.field) == ("unknown_currency", "currency")
    assert accepted(without("subscription_renewed", "mrr", currency="usd")).mrr is None


def test_float_rates_are_taken_at_their_shortest_decimal() -> None:
    config = ContractConfig(exchange_rates={"EUR": 1.1})  # type: ignore[dict-item]
    assert config.exchange_rates["EUR"] == Decimal("1.1")


@pytest.mark.parametrize(
    "config",
    [
        {"exchange_rates": {"EUR": Decimal(0)}},
        {"exchange_rates": {"EUR": Decimal(-1)}},
        {"exchange_rates": {"EUR": Decimal("NaN")}},
        {"exchange_rates": {"EUR": "lots"}},
        {"exchange_rates": {"USD": Decimal(2)}},
        {"reporting_currency": ""},
        {"max_skew_seconds": -1.0},
        {"max_skew_seconds": float("nan")},
        {"max_message_bytes": 0},
        {"max_message_bytes": True},
    ],
)
def test_bad_contract_config(config: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ContractConfig(**config)  # type: ignore[arg-type]


# -- rejections in general -----------------------------------------------------------------------


def test_decode_never_raises_even_for_a_bad_topic_role() -> None:
    result = decode(encode(payload("referral")), "nonsense", now=NOW)
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("internal_error", None)
    assert "nonsense" in result.detail


def test_rejection_details_show_what_arrived() -> None:
    result = rejected(payload("survey_response", score=11, survey="nps", scale=None))
    assert result == Rejection(
        "score_out_of_range",
        "score",
        "expected an integer from 0 to 10 on scale 0-10, got 11",
        "survey_response",
    )


def test_the_first_failing_rule_is_reported() -> None:
    message = without("purchase", "event_id", type="purchase", order_id=5, amount=-1)
    assert rejected(message).field == "event_id"
    assert rejected(payload("purchase", order_id=5, amount=-1)).field == "order_id"


def test_the_documented_examples_are_valid() -> None:
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    examples = [example for block in blocks for example in block.strip().split("\n\n")]
    assert len(examples) >= 4
    for example in examples:
        assert isinstance(run(example.encode()), Event), example


def test_every_reason_code_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    assert sorted(REASON_CODES - documented) == []


@pytest.mark.parametrize(
    ("message", "topic", "event_type"),
    [
        (payload("purchase", amount="-5.00"), None, "purchase"),
        (payload("purchase"), "sessions", "purchase"),  # wrong_topic
        (payload("session", type="login"), "sessions", "login"),  # unknown_type
        (payload("session", event_id=7), None, "session"),
        (payload("session", type=5), "sessions", None),
        (without("session", "type"), "sessions", None),
        (b"{not json", "sessions", None),
    ],
)
def test_a_rejection_keeps_the_type_string_the_message_had(message, topic, event_type):
    assert rejected(message, topic=topic).event_type == event_type
