"""The event contract, version 1 (KPI-SPEC section 2).

`decode` turns the raw bytes of one Kafka message value into either an `Event` (valid, with
every timestamp normalised to UTC epoch seconds and money as `Decimal` in the reporting
currency) or a `Rejection` naming a short stable reason code, the offending field and what was
wrong. It never raises on bad input: one bad message must not stop a stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

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
