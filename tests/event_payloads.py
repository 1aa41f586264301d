"""Valid message payloads of every event type, and helpers to send them through `decode`."""

from __future__ import annotations

import calendar
import json
from typing import Any

from stream_kpis.events import ContractConfig, Event, Rejection, decode

# The clock of every test: 2026-01-31T00:00:00Z.
NOW = float(calendar.timegm((2026, 1, 31, 0, 0, 0)))
# 2026-01-30T12:00:00Z, half a day before NOW.
NOON = float(calendar.timegm((2026, 1, 30, 12, 0, 0)))
NOON_TEXT = "2026-01-30T12:00:00Z"

TOPIC = {
    "session": "sessions",
    "session_started": "sessions",
    "session_heartbeat": "sessions",
    "session_ended": "sessions",
    "subscription_started": "subscriptions",
    "subscription_changed": "subscriptions",
    "subscription_renewed": "subscriptions",
    "subscription_cancelled": "subscriptions",
    "purchase": "subscriptions",
    "survey_response": "surveys",
    "referral": "surveys",
}

_COMMON = {"event_id": "e-1", "occurred_at": NOON_TEXT, "customer_id": "c-1"}

# One valid payload per type, with every field the type knows about.
FULL: dict[str, dict[str, Any]] = {
    "session": {
        "session_id": "s-1",
        "started_at": "2026-01-30T11:50:00Z",
        "ended_at": "2026-01-30T12:00:00Z",
        "converted": True,
        "goal_reached": False,
    },
    "session_started": {"session_id": "s-1"},
    "session_heartbeat": {"session_id": "s-1"},
    "session_ended": {"session_id": "s-1", "converted": False, "goal_reached": True},
    "subscription_started": {
        "subscription_id": "sub-1",
        "mrr": "49.90",
        "plan": "pro",
        "currency": "USD",
    },
    "subscription_changed": {"subscription_id": "sub-1", "mrr": 59, "currency": "USD"},
    "subscription_renewed": {"subscription_id": "sub-1", "mrr": 59.5, "currency": "USD"},
    "subscription_cancelled": {
        "subscription_id": "sub-1",
        "reason": "too expensive",
        "involuntary": False,
    },
    "purchase": {"order_id": "o-1", "amount": "12.00", "currency": "USD"},
    "survey_response": {"survey": "csat", "score": 4, "scale": "1-5", "comment": "fine"},
    "referral": {},
}


def payload(kind: str, **fields: Any) -> dict[str, Any]:
    """A valid payload of `kind`, with `fields` replacing or adding fields (None stays null)."""
    return {**_COMMON, "type": kind, **FULL[kind], **fields}


def without(kind: str, *names: str, **fields: Any) -> dict[str, Any]:
    """A valid payload of `kind` without the fields `names`."""
    result = payload(kind, **fields)
    for name in names:
        result.pop(name, None)
    return result


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


def run(
    message: dict[str, Any] | bytes | None,
    topic: str | None = None,
    *,
    now: float = NOW,
    config: ContractConfig | None = None,
) -> Event | Rejection:
    """`decode` a payload (a dict is JSON-encoded) on its type's topic unless `topic` is given."""
    if isinstance(message, dict):
        topic = topic or TOPIC.get(message.get("type"), "sessions")  # type: ignore[arg-type]
        raw: bytes | None = encode(message)
    else:
        raw = message
        topic = topic or _topic_of_raw(raw)
    return decode(raw, topic or "sessions", now=now, config=config or ContractConfig())


def _topic_of_raw(raw: bytes | None) -> str:
    """The topic of a raw message's type when it has a readable one, else sessions."""
    try:
        kind = json.loads(raw or b"").get("type")
    except (ValueError, AttributeError, RecursionError):
        return "sessions"
    return TOPIC.get(kind, "sessions") if isinstance(kind, str) else "sessions"


def accepted(message: dict[str, Any] | bytes, **options: Any) -> Event:
    result = run(message, **options)
    assert isinstance(result, Event), result
    return result


def rejected(message: dict[str, Any] | bytes | None, **options: Any) -> Rejection:
    result = run(message, **options)
    assert isinstance(result, Rejection), result
    return result
