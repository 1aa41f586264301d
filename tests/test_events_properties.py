"""Properties of `decode` over generated input: it never raises, always ends in exactly one
valid Event or one Rejection with a documented reason, and reads valid events faithfully."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_kpis.event_fields import EARLIEST_SECONDS, MAX_ID_CHARS, SCALES
from stream_kpis.events import (
    REASON_CODES,
    TOPIC_BY_TYPE,
    TOPIC_ROLES,
    TYPES_BY_TOPIC,
    ContractConfig,
    Event,
    Rejection,
    decode,
)
from tests.event_payloads import FULL, NOW, payload

CONFIG = ContractConfig(exchange_rates={"EUR": Decimal("1.25")})
SKEW_SECONDS = CONFIG.max_skew_seconds
WHOLE_MESSAGE_REASONS = {"not_utf8", "malformed_json", "not_an_object", "too_large"}
FIELDS = [
    "type", "event_id", "occurred_at", "customer_id", "visitor_id", "program", "session_id",
    "duration_seconds", "started_at", "ended_at", "converted", "goal_reached", "subscription_id",
    "mrr", "plan", "currency", "reason", "involuntary", "order_id", "amount", "survey", "score",
    "scale", "comment",
]  # fmt: skip
ALL_TYPES = sorted(TOPIC_BY_TYPE)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_outcome(result: object) -> None:
    """Exactly one Event that keeps the contract's promises, or one documented Rejection."""
    assert type(result) in (Event, Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASON_CODES
        assert result.reason != "internal_error", result
        assert result.field is None or result.field in FIELDS
        assert (result.field is None) == (result.reason in WHOLE_MESSAGE_REASONS)
        assert isinstance(result.detail, str) and len(result.detail) < 400
        return
    assert isinstance(result, Event)
    assert result.type in TYPES_BY_TOPIC[result.topic]
    for text in (result.event_id, result.subject, result.program):
        assert isinstance(text, str) and 1 <= len(text) <= MAX_ID_CHARS
    assert result.program != "all"
    for moment in (result.occurred_at, result.started_at, result.ended_at):
        assert moment is None or EARLIEST_SECONDS <= moment <= NOW + SKEW_SECONDS
    for money in (result.mrr, result.amount):
        assert money is None or (money.is_finite() and money >= 0)
    if result.duration_seconds is not None:
        assert math.isfinite(result.duration_seconds) and result.duration_seconds >= 0
    if result.started_at is not None and result.ended_at is not None:
        assert result.ended_at >= result.started_at
    if result.type == "survey_response":
        assert result.scale is not None and result.score is not None
        low, high = SCALES[result.scale]
        assert low <= result.score <= high and type(result.score) is int


# -- JSON text, valid or nearly so ---------------------------------------------------------------

odd_characters = st.characters(exclude_categories=())  # surrogates, controls, private use
interesting_strings = st.sampled_from(
    [
        "", "all", "default", "csat", "nps", "1-5", "0-10", "USD", "eur", "49.90", "1e3", "-1",
        "١٢", "NaN", "2026-01-30T12:00:00Z", "2026-01-30T12:00:00", "2023-02-30T00:00:00Z",
        "2016-12-31T23:59:60Z", "0000-01-01T00:00:00Z", "\u0000", "😀" * 129, *ALL_TYPES,
    ]
)  # fmt: skip


def json_string(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


string_text = st.builds(
    json_string, st.one_of(interesting_strings, st.text(odd_characters, max_size=40)), st.booleans()
)
number_text = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(
        lambda sign, digits: sign + "9" * digits,
        st.sampled_from(["", "-"]),
        # Around a double's range and Python's 4300-digit limit for int().
        st.one_of(st.integers(1, 40), st.sampled_from([308, 309, 4300, 4301, 6000])),
    ),
    st.builds(
        lambda whole, fraction, exponent: f"{whole}.{fraction}e{exponent}",
        st.integers(-(10**6), 10**6),
        st.integers(0, 10**6),
        st.integers(-500, 500),
    ),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e999",
            "-1e999",
            "0e999",
            "-0",
            "-0.0",
            "1E400",
            "1769774400",
            "1769774400000",
            "1769774400.5",
            "5.0",
            "4",
            "01",
            "1.",
            ".5",
            "+1",
        ]
    ),  # fmt: skip
)
scalar_text = st.one_of(st.sampled_from(["null", "true", "false"]), string_text, number_text)
key_text = st.one_of(st.sampled_from(FIELDS), st.text(odd_characters, max_size=10)).map(
    lambda key: json.dumps(key)
)


def as_array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def as_object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}"


json_text = st.recursive(
    scalar_text,
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(as_array),
        st.lists(st.tuples(key_text, children), max_size=5).map(as_object),
    ),
    max_leaves=25,
)
deep_text = st.builds(
    lambda depth, form: form.replace("<", "[" * depth).replace(">", "]" * depth),
    st.integers(1, 3000),
    st.sampled_from(["<>", "<", ">", "<1>", '{"a":<>}', '{"type":"session","x":<>}']),
)


@FAST
@given(st.binary(max_size=3000), st.sampled_from(TOPIC_ROLES))
def test_arbitrary_bytes(raw: bytes, topic: str) -> None:
    assert_one_outcome(decode(raw, topic, now=NOW, config=CONFIG))


@FAST
@given(st.one_of(json_text, deep_text), st.sampled_from(TOPIC_ROLES))
def test_arbitrary_json(text: str, topic: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    assert_one_outcome(decode(raw, topic, now=NOW, config=CONFIG))


@st.composite
def contract_shaped(draw: st.DrawFn) -> tuple[str, str]:
    """An object with a real type and contract field names, holding arbitrary values."""
    kind = draw(st.sampled_from(ALL_TYPES))
    names = draw(st.lists(st.sampled_from(FIELDS[1:]), max_size=12, unique=True))
    pairs = [('"type"', json.dumps(kind))]
    pairs += [(json.dumps(name), draw(json_text)) for name in names]
    draw(st.randoms()).shuffle(pairs)
    topic = draw(st.sampled_from([TOPIC_BY_TYPE[kind], *TOPIC_ROLES]))
    return as_object(pairs), topic


@settings(FAST, max_examples=150)
@given(contract_shaped())
def test_arbitrary_values_in_contract_fields(shaped: tuple[str, str]) -> None:
    text, topic = shaped
    assert_one_outcome(decode(text.encode("utf-8", "surrogatepass"), topic, now=NOW, config=CONFIG))


# -- one field broken at a time ------------------------------------------------------------------

# Fields whose change can be reported on another field of the same message.
ALSO_BLAMED = {
    "started_at": {"ended_at"},  # a later start makes the end come before it
    "duration_seconds": {"started_at", "ended_at"},
    "scale": {"score"},  # a narrower scale puts the score out of range
    "survey": {"scale", "score"},
    "customer_id": {"visitor_id"},
    "currency": {"mrr", "amount"},  # a conversion can overflow
}


@st.composite
def one_field_broken(draw: st.DrawFn) -> tuple[str, str, str]:
    kind = draw(st.sampled_from(ALL_TYPES))
    message = payload(kind)
    name = draw(st.sampled_from(sorted(message)))
    pairs = [
        (json.dumps(key), draw(json_text) if key == name else json.dumps(value))
        for key, value in message.items()
    ]
    return as_object(pairs), name, TOPIC_BY_TYPE[kind]


@settings(FAST, max_examples=250)
@given(one_field_broken())
def test_a_broken_field_is_the_one_blamed(broken: tuple[str, str, str]) -> None:
    text, name, topic = broken
    result = decode(text.encode("utf-8", "surrogatepass"), topic, now=NOW, config=CONFIG)
    assert_one_outcome(result)
    if isinstance(result, Rejection) and result.reason not in WHOLE_MESSAGE_REASONS:
        assert result.field in {name} | ALSO_BLAMED.get(name, set()), (name, result)


@FAST
@given(st.sampled_from(ALL_TYPES), st.randoms(), st.booleans())
def test_key_order_and_escaping_do_not_matter(
    kind: str, rng: random.Random, break_it: bool
) -> None:
    message = payload(kind)
    if break_it:
        message[rng.choice(sorted(message))] = rng.choice([None, "", -1, [], "x" * 200, 1e300])
    shuffled = dict(rng.sample(sorted(message.items()), len(message)))
    plain = decode(json.dumps(message, ensure_ascii=False).encode(), TOPIC_BY_TYPE[kind], now=NOW)
    other = decode(json.dumps(shuffled, ensure_ascii=True).encode(), TOPIC_BY_TYPE[kind], now=NOW)
    assert plain == other


# -- valid events are read faithfully ------------------------------------------------------------

ids = st.text(min_size=1, max_size=MAX_ID_CHARS)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2026, 1, 31, 23, 59, 59),
    timezones=st.just(UTC),
)


@st.composite
def timestamp_forms(draw: st.DrawFn) -> tuple[Any, float]:
    """A timestamp as it may be written, and its UTC seconds worked out independently."""
    moment = draw(instants)
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    form = draw(st.sampled_from(["text", "seconds", "float_seconds", "millis"]))
    if form == "text":
        offset = timezone(timedelta(minutes=draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))))
        return moment.astimezone(offset).isoformat(), float(Fraction(micros, 10**6))
    if form == "seconds":
        return micros // 10**6, float(micros // 10**6)
    if form == "float_seconds":
        value = micros / 10**6
        return value, value
    millis = micros // 1000
    return millis, float(Fraction(millis, 1000))


money = st.decimals(min_value=0, max_value=10**12, allow_nan=False, allow_infinity=False, places=4)


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid message and the Event fields it must give, computed without the decoder."""
    kind = draw(st.sampled_from(ALL_TYPES))
    occurred_at, occurred_seconds = draw(timestamp_forms())
    subject = draw(ids)
    message: dict[str, Any] = {"type": kind, "event_id": draw(ids), "occurred_at": occurred_at}
    message["customer_id" if draw(st.booleans()) else "visitor_id"] = subject
    expected: dict[str, Any] = {
        "type": kind,
        "topic": TOPIC_BY_TYPE[kind],
        "event_id": message["event_id"],
        "occurred_at": occurred_seconds,
        "subject": subject,
        "program": "default",
    }
    program = draw(st.one_of(st.none(), ids.filter(lambda name: name != "all")))
    if program is not None:
        message["program"] = expected["program"] = program

    if kind in ("subscription_started", "subscription_changed", "purchase"):
        field = "amount" if kind == "purchase" else "mrr"
        amount = draw(money)
        as_string = draw(st.booleans())
        message[field] = format(amount, "f") if as_string else float(amount)
        written = Decimal(format(amount, "f")) if as_string else Decimal(repr(float(amount)))
        if draw(st.booleans()):
            message["currency"] = "eur"
            written *= Decimal("1.25")
        expected[field] = written
    if kind == "survey_response":
        survey = draw(st.sampled_from(["csat", "nps"]))
        scale = "1-5" if survey == "csat" else draw(st.sampled_from(["1-5", "0-10"]))
        score = draw(st.integers(*SCALES[scale]))
        message.update(survey=survey, scale=scale, score=score, comment=draw(st.text()))
        expected.update(survey=survey, scale=scale, score=score)
    if kind == "purchase":
        message["order_id"] = expected["order_id"] = draw(ids)
    if kind in ("session", "session_started", "session_heartbeat", "session_ended"):
        message["session_id"] = expected["session_id"] = draw(ids)
    if kind == "session":
        duration = draw(st.integers(0, 86400))
        message["duration_seconds"] = expected["duration_seconds"] = duration
    return message, expected


@settings(FAST, max_examples=300)
@given(valid_messages())
def test_valid_messages_are_read_faithfully(
    generated: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    message, expected = generated
    raw = json.dumps(message, ensure_ascii=False).encode()
    result = decode(raw, expected["topic"], now=NOW, config=CONFIG)
    assert isinstance(result, Event), result
    assert_one_outcome(result)
    for name, value in expected.items():
        assert getattr(result, name) == value, name
    assert set(FULL[message["type"]]) >= {
        name for name in message if name not in ("type", "event_id", "occurred_at", "customer_id",
                                                  "visitor_id", "program", "duration_seconds")
    }  # fmt: skip


@FAST
@given(st.text(), st.sampled_from([{}, {"score": 99}, {"scale": "1-7"}, {"survey": "x"}]))
def test_the_comment_is_never_kept(text: str, breakage: dict[str, Any]) -> None:
    comment = f"SECRET {text}"
    raw = json.dumps(payload("survey_response", comment=comment, **breakage)).encode()
    result = decode(raw, "surveys", now=NOW)
    assert "SECRET" not in repr(result)
