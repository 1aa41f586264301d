"""The event contract, version 1 (KPI-SPEC section 2).

`decode` turns the raw bytes of one Kafka message value into either an `Event` (valid, with
every timestamp normalised to UTC epoch seconds and money as `Decimal` in the reporting
currency) or a `Rejection` naming a short stable reason code, the offending field and what was
wrong. It never raises on bad input: one bad message must not stop a stream.

The checks run in a fixed order and the first failure is reported: the message as a whole
(size, UTF-8, nesting, JSON syntax, an object; `event_wire`), then `type`, `event_id`,
`occurred_at`, the subject, `program`, and then the fields of the type in the order
docs/events.md lists them (single-field checks: `event_fields`). The reason codes are
`REASON_CODES`; docs/events.md describes each with examples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from stream_kpis import event_fields as check
from stream_kpis.errors import ConfigError
from stream_kpis.event_fields import SCALES, Invalid, quote, show
from stream_kpis.event_wire import Wire, as_bytes, parse

logger = logging.getLogger(__name__)

TOPIC_ROLES = ("sessions", "subscriptions", "surveys")

TYPES_BY_TOPIC: dict[str, frozenset[str]] = {
    "sessions": frozenset({"session", "session_started", "session_heartbeat", "session_ended"}),
    "subscriptions": frozenset(
        {
            "subscription_started",
            "subscription_changed",
            "subscription_renewed",
            "subscription_cancelled",
            "purchase",
        }
    ),
    "surveys": frozenset({"survey_response", "referral"}),
}

TOPIC_BY_TYPE: dict[str, str] = {
    kind: topic for topic, kinds in TYPES_BY_TOPIC.items() for kind in kinds
}

# Every reason a message can be rejected for: stable, described in docs/events.md, and the
# fixed label set of the invalid-message counters.
REASON_CODES: frozenset[str] = frozenset(
    {
        "not_utf8",
        "malformed_json",
        "not_an_object",
        "too_large",
        "missing_field",
        "wrong_type",
        "invalid_value",
        "unknown_type",
        "wrong_topic",
        "score_out_of_range",
        "invalid_amount",
        "end_before_start",
        "invalid_timestamp",
        "timestamp_too_old",
        "timestamp_in_future",
        "unknown_currency",
        "reserved_program",
        "internal_error",
    }
)

DEFAULT_PROGRAM = "default"
RESERVED_PROGRAM = "all"
PROGRAM_NAME_RULE = (
    f"a programme is 1-{check.MAX_ID_CHARS} characters and not {RESERVED_PROGRAM!r}, which "
    "names all programmes together"
)


def is_program_name(name: str) -> bool:
    """Whether the contract accepts `name` as an event's programme (PROGRAM_NAME_RULE)."""
    return 0 < len(name) <= check.MAX_ID_CHARS and name != RESERVED_PROGRAM


DEFAULT_SCALE_BY_SURVEY = {"csat": "1-5", "nps": "0-10"}

# An internal error is a bug; log the first ones in full, then one in every thousand.
_INTERNAL_ERRORS_LOGGED_IN_FULL = 10
_INTERNAL_ERROR_LOG_EVERY = 1000
_DETAIL_CHARS = 120


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event. Times are UTC epoch seconds; money is in the reporting currency.

    `subject` is `customer_id` when present, else `visitor_id`. Survey comments are never
    kept: they must not reach logs, metrics or state.
    """

    event_id: str
    type: str
    topic: str
    occurred_at: float
    subject: str
    program: str = "default"
    # sessions topic
    session_id: str | None = None
    duration_seconds: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    converted: bool | None = None
    goal_reached: bool | None = None
    # subscriptions topic
    subscription_id: str | None = None
    mrr: Decimal | None = None
    plan: str | None = None
    reason: str | None = None
    involuntary: bool | None = None
    order_id: str | None = None
    amount: Decimal | None = None
    # surveys topic
    survey: str | None = None
    score: int | None = None
    scale: str | None = None

    @property
    def time(self) -> float:
        """The event time used for every window: a `session` counts at its end."""
        if self.type == "session" and self.ended_at is not None:
            return self.ended_at
        return self.occurred_at


@dataclass(frozen=True, slots=True)
class ContractConfig:
    """The configurable parts of the contract.

    Currency codes are case-insensitive: they are compared in upper case, so `"usd"` is USD.
    `exchange_rates` maps a currency to what one unit of it is worth in the reporting currency;
    the reporting currency itself is never converted.
    """

    reporting_currency: str = "USD"
    exchange_rates: Mapping[str, Decimal] = field(default_factory=dict)
    max_skew_seconds: float = 86400.0
    max_message_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        if not isinstance(self.reporting_currency, str) or not self.reporting_currency:
            raise ConfigError(
                f"reporting_currency must be a currency code, got {self.reporting_currency!r}"
            )
        reporting = self.reporting_currency.upper()
        rates: dict[str, Decimal] = {}
        for code, rate in self.exchange_rates.items():
            rates[str(code).upper()] = _exchange_rate(code, rate, reporting)
        rates.pop(reporting, None)
        if not (math.isfinite(self.max_skew_seconds) and self.max_skew_seconds >= 0):
            raise ConfigError(f"max_skew_seconds must be >= 0, got {self.max_skew_seconds!r}")
        if isinstance(self.max_message_bytes, bool) or not (
            isinstance(self.max_message_bytes, int) and self.max_message_bytes > 0
        ):
            raise ConfigError(f"max_message_bytes must be > 0, got {self.max_message_bytes!r}")
        object.__setattr__(self, "reporting_currency", reporting)
        object.__setattr__(self, "exchange_rates", MappingProxyType(rates))


def _exchange_rate(code: object, rate: object, reporting: str) -> Decimal:
    """A configured rate as a positive finite Decimal (floats through their shortest repr)."""
    try:
        value = Decimal(repr(rate)) if isinstance(rate, float) else Decimal(str(rate))
    except (InvalidOperation, TypeError, ValueError):
        value = Decimal("NaN")
    if not value.is_finite() or value <= 0:
        raise ConfigError(f"exchange rate for {code!r} must be a positive number, got {rate!r}")
    if str(code).upper() == reporting and value != 1:
        raise ConfigError(
            f"exchange rate for the reporting currency {reporting} must be 1, got {rate!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message is invalid: a stable `reason` code, the offending `field` (None for the
    whole message) and a `detail` saying what was expected and what arrived."""

    reason: str
    field: str | None
    detail: str
    event_type: str | None = None  # the message's `type` when it was a string, else None


DEFAULT_CONTRACT = ContractConfig()


def decode(
    raw: bytes | None, topic: str, *, now: float, config: ContractConfig = DEFAULT_CONTRACT
) -> Event | Rejection:
    """One message value, arrived on the topic with role `topic`, as an `Event` or a `Rejection`.

    `now` is the clock (UTC epoch seconds) for the future-skew check. Never raises: an
    unexpected error inside is logged and returned as the rejection `internal_error`.
    """
    try:
        return _decode(raw, topic, now, config)
    except Invalid as invalid:
        return Rejection(invalid.reason, invalid.field, invalid.detail, invalid.event_type)
    except Exception as exc:  # noqa: BLE001 - the contract is that decode never raises
        return _internal_error(exc, topic)


def _decode(raw: object, topic: str, now: float, config: ContractConfig) -> Event:
    allowed = TYPES_BY_TOPIC.get(topic)
    if allowed is None:
        raise ValueError(f"unknown topic role {topic!r}; expected one of {TOPIC_ROLES}")
    wire = parse(as_bytes(raw), max_message_bytes=config.max_message_bytes)

    kind = wire.type
    if kind is None:
        raise check.missing("type")
    if type(kind) is not str:
        raise Invalid("wrong_type", "type", f"expected a string, got {check.got(kind)}")
    try:
        return _typed(wire, kind, allowed, topic, now, config)
    except Invalid as invalid:
        invalid.event_type = kind
        raise


def _typed(
    wire: Wire, kind: str, allowed: frozenset[str], topic: str, now: float, config: ContractConfig
) -> Event:
    """The event of a message whose `type` is the string `kind`."""
    if kind not in allowed:
        raise _wrong_type_for_topic(kind, topic)

    event_id = check.text(wire.event_id, "event_id", required=True)
    occurred_at = check.timestamp(
        wire.occurred_at,
        "occurred_at",
        now=now,
        max_skew_seconds=config.max_skew_seconds,
        required=True,
    )
    subject = _subject(wire)
    program = _program(wire.program)
    details = _CHECKS_BY_TYPE[kind](wire, now, config)
    return Event(
        event_id=event_id,
        type=kind,
        topic=topic,
        occurred_at=occurred_at,
        subject=subject,
        program=program,
        **details,
    )


def _wrong_type_for_topic(kind: str, topic: str) -> Invalid:
    home = TOPIC_BY_TYPE.get(kind)
    if home is not None:
        return Invalid(
            "wrong_topic", "type", f"type {quote(kind)} belongs on the {home} topic, not {topic}"
        )
    expected = ", ".join(sorted(TYPES_BY_TOPIC[topic]))
    return Invalid("unknown_type", "type", f"expected one of {expected}, got {quote(kind)}")


def _time(value: Any, field: str, now: float, config: ContractConfig) -> float | None:
    return check.timestamp(value, field, now=now, max_skew_seconds=config.max_skew_seconds)


def _in_reporting_currency(
    amount: Decimal | None, field: str, wire: Wire, config: ContractConfig
) -> Decimal | None:
    return check.in_reporting_currency(
        amount,
        field,
        wire.currency,
        reporting_currency=config.reporting_currency,
        exchange_rates=config.exchange_rates,
    )


# -- fields every event has ------------------------------------------------------------------


def _subject(wire: Wire) -> str:
    """`customer_id` when present, else `visitor_id`; the other one is not looked at."""
    if wire.customer_id is not None:
        return check.text(wire.customer_id, "customer_id", required=True)
    if wire.visitor_id is not None:
        return check.text(wire.visitor_id, "visitor_id", required=True)
    raise Invalid("missing_field", "customer_id", "expected customer_id or visitor_id, got neither")


def _program(value: Any) -> str:
    program = check.text(value, "program")
    if program is None:
        return DEFAULT_PROGRAM
    if program == RESERVED_PROGRAM:
        raise Invalid(
            "reserved_program",
            "program",
            f"{quote(program)} is reserved for all programmes together",
        )
    return program


# -- the fields of each type -----------------------------------------------------------------


def _session(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    session_id = check.text(wire.session_id, "session_id", required=True)
    duration_seconds = check.duration(wire.duration_seconds, "duration_seconds")
    started_at = _time(wire.started_at, "started_at", now, config)
    ended_at = _time(wire.ended_at, "ended_at", now, config)

    if started_at is not None and ended_at is not None and ended_at < started_at:
        raise Invalid(
            "end_before_start",
            "ended_at",
            f"expected ended_at at or after started_at {show(wire.started_at)}, "
            f"got {show(wire.ended_at)}",
        )
    if duration_seconds is None:
        if started_at is None and ended_at is None:
            raise Invalid(
                "missing_field",
                "duration_seconds",
                "expected duration_seconds, or started_at and ended_at, got none of them",
            )
        if started_at is None:
            raise check.missing("started_at", "with ended_at and no duration_seconds")
        if ended_at is None:
            raise check.missing("ended_at", "with started_at and no duration_seconds")
        duration_seconds = ended_at - started_at

    return {
        "session_id": session_id,
        "duration_seconds": duration_seconds,
        "started_at": started_at,
        "ended_at": ended_at,
        "converted": check.flag(wire.converted, "converted"),
        "goal_reached": check.flag(wire.goal_reached, "goal_reached"),
    }


def _session_part(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    return {"session_id": check.text(wire.session_id, "session_id", required=True)}


def _session_ended(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    return {
        "session_id": check.text(wire.session_id, "session_id", required=True),
        "converted": check.flag(wire.converted, "converted"),
        "goal_reached": check.flag(wire.goal_reached, "goal_reached"),
    }


def _subscription_started(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    subscription_id = check.text(wire.subscription_id, "subscription_id")
    mrr = check.money(wire.mrr, "mrr", required=True)
    plan = check.text(wire.plan, "plan")
    return {
        "subscription_id": subscription_id,
        "mrr": _in_reporting_currency(mrr, "mrr", wire, config),
        "plan": plan,
    }


def _subscription_changed(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    subscription_id = check.text(wire.subscription_id, "subscription_id")
    mrr = check.money(wire.mrr, "mrr", required=True)
    return {
        "subscription_id": subscription_id,
        "mrr": _in_reporting_currency(mrr, "mrr", wire, config),
    }


def _subscription_renewed(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    subscription_id = check.text(wire.subscription_id, "subscription_id")
    mrr = check.money(wire.mrr, "mrr")
    return {
        "subscription_id": subscription_id,
        "mrr": _in_reporting_currency(mrr, "mrr", wire, config),
    }


def _subscription_cancelled(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    return {
        "subscription_id": check.text(wire.subscription_id, "subscription_id"),
        "reason": check.free_text(wire.reason, "reason"),
        "involuntary": check.flag(wire.involuntary, "involuntary"),
    }


def _purchase(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    order_id = check.text(wire.order_id, "order_id", required=True)
    amount = check.money(wire.amount, "amount", required=True)
    return {
        "order_id": order_id,
        "amount": _in_reporting_currency(amount, "amount", wire, config),
    }


def _survey_response(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    survey = check.choice(wire.survey, "survey", DEFAULT_SCALE_BY_SURVEY, required=True)
    scale = check.choice(wire.scale, "scale", SCALES) or DEFAULT_SCALE_BY_SURVEY[survey]
    if survey == "csat" and scale != "1-5":
        raise Invalid("invalid_value", "scale", f'expected "1-5" for csat, got {quote(scale)}')
    score = check.score(wire.score, "score", scale)

    # The comment is checked for its type only: its text must never reach a log, a metric,
    # state or a rejection detail.
    comment = wire.comment
    if comment is not None and type(comment) is not str:
        raise Invalid("wrong_type", "comment", f"expected a string, got {check.kind(comment)}")
    return {"survey": survey, "scale": scale, "score": score}


def _referral(wire: Wire, now: float, config: ContractConfig) -> dict[str, Any]:
    return {}


_CHECKS_BY_TYPE: dict[str, Callable[[Wire, float, ContractConfig], dict[str, Any]]] = {
    "session": _session,
    "session_started": _session_part,
    "session_heartbeat": _session_part,
    "session_ended": _session_ended,
    "subscription_started": _subscription_started,
    "subscription_changed": _subscription_changed,
    "subscription_renewed": _subscription_renewed,
    "subscription_cancelled": _subscription_cancelled,
    "purchase": _purchase,
    "survey_response": _survey_response,
    "referral": _referral,
}


# -- internal errors ---------------------------------------------------------------------------

_internal_error_count = 0


def _internal_error(exc: Exception, topic: object) -> Rejection:
    """A bug or an unforeseen input: reject the message and log it (throttled)."""
    global _internal_error_count
    _internal_error_count += 1
    count = _internal_error_count
    if count <= _INTERNAL_ERRORS_LOGGED_IN_FULL or count % _INTERNAL_ERROR_LOG_EVERY == 0:
        logger.error(
            "internal error while decoding a message from the %s topic (%d so far); rejected",
            topic,
            count,
            exc_info=exc,
        )
    detail = f"{type(exc).__name__}: {exc}"
    return Rejection("internal_error", None, detail[:_DETAIL_CHARS])
