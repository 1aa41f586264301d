"""Seeded synthetic event streams: every event type, with realistic shapes, as JSONL lines.

The stream follows visitors. Each arrives at a time drawn with a daily and weekly rhythm (busy
afternoons UTC, quieter weekends) and comes back for more sessions. A session ends in a
conversion now and then: a subscription on one of PLANS (renewed every 30 days, sometimes
upgraded or downgraded, cancelled at a constant monthly hazard, raised by `churn_spike_factor`
for `churn_spike_hours` from `churn_spike_at`) or a one-time purchase (sometimes sent twice with
the same `order_id`). Some sessions are reported whole, others in parts (started, heartbeats,
ended; some never end and time out). Some sessions are followed by a CSAT survey, customers by
an NPS survey a few weeks in (a few on the five-point scale), and promoters refer others.

The same seed and settings give the same lines. The lines are in event-time order except a
fraction (`out_of_order_fraction`) delivered late, by up to `max_delay_seconds`. Exact duplicate
lines (same `event_id`, after their original) and invalid lines (for the dead-letter path) can
be mixed in; both are off by default. `events` is the number of lines written.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO, Any

from stream_kpis.errors import ConfigError
from stream_kpis.events import PROGRAM_NAME_RULE, is_program_name
from stream_kpis.timefmt import format_utc

logger = logging.getLogger(__name__)

DAY_SECONDS = 86_400.0
MONTH_SECONDS = 30 * DAY_SECONDS

# Plan catalogue: name, MRR, share of new subscriptions.
PLANS: tuple[tuple[str, Decimal, float], ...] = (
    ("basic", Decimal("9.90"), 0.50),
    ("standard", Decimal("19.90"), 0.35),
    ("premium", Decimal("49.90"), 0.15),
)
MONTHLY_CHURN = 0.04  # share of subscriptions cancelled per 30 days, outside a spike
SESSION_CONVERSION = 0.10  # chance that a non-customer's session converts
SUBSCRIPTION_SHARE = 0.7  # of conversions; the rest are one-time purchases
CUSTOMER_PURCHASE = 0.06  # chance that a customer's session ends in a one-time purchase
PLAN_CHANGE = 0.15  # subscriptions that move to another plan in their first two months
REPEATED_ORDER = 0.03  # chance that a purchase message is sent again with the same order_id
CSAT_RESPONSE = 0.06  # sessions followed by a CSAT response
NPS_RESPONSE = 0.30  # subscribers who answer the NPS survey
NPS_FIVE_POINT = 0.05  # NPS answers on the 1-5 scale
REFERRAL_BY_PROMOTER = 0.35
SESSION_IN_PARTS = 0.25
UNENDED_SESSION = 0.10  # sessions in parts whose end never arrives (they time out)
HEARTBEAT_SECONDS = 300.0
MAX_HEARTBEATS = 6

_CSAT_WEIGHTS = (5, 7, 13, 35, 40)  # scores 1..5
_NPS_WEIGHTS = (2, 1, 1, 2, 2, 4, 6, 14, 20, 24, 24)  # scores 0..10
_NPS_5PT_WEIGHTS = (6, 8, 16, 35, 35)  # scores 1..5
_CANCEL_REASONS = ("too_expensive", "not_using", "switched", "missing_feature", "other")
_COMMENTS = ("great support", "too slow", "love it", "pricing is confusing", "works fine")


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What to generate. `start` None means midnight UTC today minus `days`."""

    seed: int = 0
    events: int = 10_000
    start: datetime | None = None
    days: float = 90.0
    programs: tuple[str, ...] = ("web", "app")
    churn_spike_at: datetime | None = None
    churn_spike_factor: float = 30.0
    churn_spike_hours: float = 6.0
    out_of_order_fraction: float = 0.01
    # Within the default grace period (300 s), so that offline and streaming agree exactly.
    max_delay_seconds: float = 240.0
    duplicate_fraction: float = 0.0
    invalid_fraction: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.events < 0:
            problems.append(f"events must be >= 0, got {self.events}")
        if not self.days > 0:
            problems.append(f"days must be > 0, got {self.days}")
        if not self.programs or not all(map(is_program_name, self.programs)):
            problems.append(f"programs {self.programs}: at least one, and {PROGRAM_NAME_RULE}")
        if self.churn_spike_factor < 0 or self.churn_spike_hours < 0:
            problems.append("the churn spike factor and hours must be >= 0")
        for name in ("out_of_order_fraction", "duplicate_fraction", "invalid_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be within 0..1, got {getattr(self, name)}")
        if self.duplicate_fraction + self.invalid_fraction > 1:
            problems.append("duplicate_fraction + invalid_fraction must not exceed 1")
        if self.max_delay_seconds < 1:
            problems.append(f"max_delay_seconds must be >= 1, got {self.max_delay_seconds}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def start_seconds(self) -> float:
        if self.start is not None:
            start = self.start if self.start.tzinfo else self.start.replace(tzinfo=UTC)
            return start.timestamp()
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return (today - timedelta(days=self.days)).timestamp()


@dataclass(order=True, slots=True)
class _Line:
    """One line to write: when it arrives, a tie-breaker, and the event (or raw text)."""

    arrival: float
    seq: int
    time: float = field(compare=False)
    body: dict[str, Any] | str = field(compare=False)


def generate(config: GeneratorConfig) -> list[str]:
    """The JSONL lines (without newlines) of the stream `config` describes."""
    rng = random.Random(config.seed)
    start = config.start_seconds
    duplicates = round(config.events * config.duplicate_fraction)
    invalid = round(config.events * config.invalid_fraction)
    base = _simulate(rng, config, start, config.events - duplicates - invalid)

    lines = _deliver(rng, config, base)
    lines += _duplicates(rng, config, lines, duplicates)
    lines += _invalid_lines(rng, config, lines, invalid, start)
    lines.sort()
    return [_render(line.body) for line in lines]


def write(config: GeneratorConfig, out: IO[str]) -> int:
    """Write the stream to `out`, one line per event; returns the number of lines."""
    lines = generate(config)
    for line in lines:
        out.write(line + "\n")
    return len(lines)


# -- the simulation ------------------------------------------------------------------------------


def _simulate(rng: random.Random, config: GeneratorConfig, start: float, count: int) -> list[_Line]:
    """At least `count` events from whole visitor journeys, then the earliest `count` of them."""
    end = start + config.days * DAY_SECONDS
    sim = _Simulation(rng, config, start, end)
    per_visitor = 4.0  # a first guess; measured after the first batch
    while len(sim.lines) < count:
        missing = count - len(sim.lines)
        for _ in range(max(1, math.ceil(missing / per_visitor))):
            sim.visitor()
        per_visitor = max(1.0, len(sim.lines) / sim.visitors)
    sim.lines.sort(key=lambda line: (line.time, line.seq))
    return sim.lines[:count]


class _Simulation:
    """Visitor journeys; every event goes to `lines` with its event time."""

    def __init__(self, rng: random.Random, config: GeneratorConfig, start: float, end: float):
        self.rng = rng
        self.config = config
        self.start = start
        self.end = end
        self.lines: list[_Line] = []
        self.visitors = 0
        self.base_hazard = -math.log(1 - MONTHLY_CHURN) / MONTH_SECONDS
        spike_at = config.churn_spike_at
        self.spike: tuple[float, float] | None = None
        if spike_at is not None:
            spike_start = (
                spike_at if spike_at.tzinfo else spike_at.replace(tzinfo=UTC)
            ).timestamp()
            self.spike = (spike_start, spike_start + config.churn_spike_hours * 3600)
        weights = [1 / (rank + 1) for rank in range(len(config.programs))]
        self.program_weights = weights

    def emit(self, time: float, body: dict[str, Any]) -> None:
        self.lines.append(_Line(time, len(self.lines), time, body))

    def visitor(self) -> None:
        rng = self.rng
        self.visitors += 1
        journey = _Journey(
            self,
            subject=f"u{self.visitors:07d}-{rng.randrange(16**4):04x}",
            program=rng.choices(self.config.programs, self.program_weights)[0],
        )
        journey.live(self.seasonal_time(self.start))

    def seasonal_time(self, after: float, mean_gap_seconds: float = 0.0) -> float:
        """A time after `after` (uniform in the span if no gap) following the daily rhythm."""
        while True:
            if mean_gap_seconds:
                after += self.rng.expovariate(1 / mean_gap_seconds)
                candidate = after
            else:
                candidate = self.rng.uniform(self.start, self.end)
            if candidate >= self.end or self.rng.random() * 1.7 < _intensity(candidate):
                return candidate

    def cancel_time(self, since: float) -> float:
        """When a subscription active since `since` is cancelled (may be after the end)."""
        need = self.rng.expovariate(1.0)  # cumulative hazard to spend
        segments = [(since, math.inf, self.base_hazard)]
        if self.spike is not None and self.spike[1] > since:
            low, high = max(self.spike[0], since), self.spike[1]
            raised = self.base_hazard * self.config.churn_spike_factor
            segments = [(since, low, self.base_hazard), (low, high, raised)]
            segments.append((high, math.inf, self.base_hazard))
        for low, high, rate in segments:
            if high <= low:
                continue
            if rate > 0 and need <= rate * (high - low):
                return low + need / rate
            need -= rate * (high - low)
        return math.inf


def _intensity(epoch_seconds: float) -> float:
    """Relative traffic: peaks at 15:00 UTC (1.7), lowest at 03:00 (0.3); weekends x0.8."""
    hour = (epoch_seconds % DAY_SECONDS) / 3600
    daily = 1 + 0.7 * math.cos(2 * math.pi * (hour - 15) / 24)
    weekday = datetime.fromtimestamp(epoch_seconds, UTC).weekday()
    return daily * (0.8 if weekday >= 5 else 1.0)


class _Journey:
    """One visitor: sessions, maybe conversion, subscription life, purchases and surveys."""

    def __init__(self, sim: _Simulation, *, subject: str, program: str):
        self.sim = sim
        self.rng = sim.rng
        self.subject = subject
        self.program = program
        self.customer = False
        self.counts: dict[str, int] = {}

    def next_id(self, kind: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{self.subject}-{kind}{self.counts[kind]}"

    def emit(self, time: float, kind: str, **fields: Any) -> None:
        if time >= self.sim.end:
            return
        who = "customer_id" if self.customer or kind in _REVENUE_TYPES else "visitor_id"
        body = {
            "event_id": self.next_id("e"),
            "type": kind,
            "occurred_at": time,
            who: self.subject,
            "program": self.program,
            **fields,
        }
        self.sim.emit(time, body)

    def live(self, arrival: float) -> None:
        at = arrival
        visits = 1 + _geometric(self.rng, 0.45)
        for _ in range(visits):
            if at >= self.sim.end:
                return
            at = self.session(at)
            at = self.sim.seasonal_time(at, mean_gap_seconds=2 * DAY_SECONDS)

    def session(self, started: float) -> float:
        rng = self.rng
        duration = min(3 * 3600.0, max(5.0, rng.lognormvariate(math.log(240), 1.0)))
        ended = started + duration
        converts = not self.customer and rng.random() < SESSION_CONVERSION
        buys = self.customer and rng.random() < CUSTOMER_PURCHASE
        flags = {
            "converted": converts or buys,
            "goal_reached": rng.random() < (0.7 if converts else 0.3),
        }
        if rng.random() < SESSION_IN_PARTS:
            self.session_in_parts(started, ended, flags)
        else:
            self.whole_session(started, ended, flags)

        if converts:
            self.customer = True
            if rng.random() < SUBSCRIPTION_SHARE:
                self.subscribe(ended + rng.uniform(1, 30))
            else:
                self.purchase(ended + rng.uniform(1, 30))
        elif buys:
            self.purchase(ended + rng.uniform(1, 30))
        if rng.random() < CSAT_RESPONSE:
            self.csat(ended + rng.uniform(60, 3600))
        return ended

    def whole_session(self, started: float, ended: float, flags: dict[str, bool]) -> None:
        session_id = self.next_id("s")
        if self.rng.random() < 0.7:
            self.emit(
                ended,
                "session",
                session_id=session_id,
                duration_seconds=round(ended - started, 3),
                **flags,
            )
        else:
            self.emit(
                ended, "session", session_id=session_id, started_at=started, ended_at=ended, **flags
            )

    def session_in_parts(self, started: float, ended: float, flags: dict[str, bool]) -> None:
        session_id = self.next_id("s")
        self.emit(started, "session_started", session_id=session_id)
        beats = min(MAX_HEARTBEATS, int((ended - started) // HEARTBEAT_SECONDS))
        for beat in range(1, beats + 1):
            self.emit(
                started + beat * HEARTBEAT_SECONDS, "session_heartbeat", session_id=session_id
            )
        if self.rng.random() >= UNENDED_SESSION:
            self.emit(ended, "session_ended", session_id=session_id, **flags)

    def subscribe(self, started: float) -> None:
        rng, sim = self.rng, self.sim
        plan, mrr = _pick_plan(rng)
        subscription_id = self.next_id("sub")
        ids = {"subscription_id": subscription_id}
        self.emit(started, "subscription_started", **ids, plan=plan, mrr=str(mrr))
        cancelled = sim.cancel_time(started)
        active_until = min(cancelled, sim.end)

        # Now and then an upgrade or a downgrade, to another plan, within the first two months.
        changed_at, new_mrr = math.inf, mrr
        if rng.random() < PLAN_CHANGE:
            changed_at = started + rng.uniform(5, 55) * DAY_SECONDS
            new_plan, new_mrr = _pick_plan(rng, other_than=plan)
            if changed_at < active_until:
                self.emit(
                    changed_at, "subscription_changed", **ids, plan=new_plan, mrr=str(new_mrr)
                )

        renewal = started + MONTH_SECONDS
        while renewal < active_until:
            current = new_mrr if changed_at < renewal else mrr
            self.emit(renewal, "subscription_renewed", **ids, mrr=str(current))
            renewal += MONTH_SECONDS

        if rng.random() < NPS_RESPONSE:
            self.nps(started + rng.uniform(7, 21) * DAY_SECONDS, before=cancelled)
        if cancelled < sim.end:
            self.cancel(cancelled, subscription_id)
            if rng.random() < 0.1:
                self.subscribe(cancelled + rng.uniform(3, 20) * DAY_SECONDS)

    def cancel(self, at: float, subscription_id: str) -> None:
        if self.rng.random() < 0.25:
            fields: dict[str, Any] = {"reason": "payment_failed", "involuntary": True}
        else:
            fields = {"reason": self.rng.choice(_CANCEL_REASONS), "involuntary": False}
        self.emit(at, "subscription_cancelled", subscription_id=subscription_id, **fields)

    def purchase(self, at: float) -> None:
        order_id = self.next_id("o")
        amount = str(Decimal(self.rng.lognormvariate(math.log(35), 0.6)).quantize(Decimal("0.01")))
        self.emit(at, "purchase", order_id=order_id, amount=amount)
        if self.rng.random() < REPEATED_ORDER:
            self.emit(at + self.rng.uniform(1, 600), "purchase", order_id=order_id, amount=amount)

    def csat(self, at: float) -> None:
        score = self.rng.choices(range(1, 6), _CSAT_WEIGHTS)[0]
        self.emit(at, "survey_response", survey="csat", score=score, scale="1-5", **self.comment())

    def nps(self, at: float, *, before: float) -> None:
        if at >= before:
            return
        if self.rng.random() < NPS_FIVE_POINT:
            score, scale = self.rng.choices(range(1, 6), _NPS_5PT_WEIGHTS)[0], "1-5"
            promoter = score >= 4
        else:
            score, scale = self.rng.choices(range(11), _NPS_WEIGHTS)[0], "0-10"
            promoter = score >= 9
        self.emit(at, "survey_response", survey="nps", score=score, scale=scale, **self.comment())
        if promoter and self.rng.random() < REFERRAL_BY_PROMOTER:
            self.emit(at + self.rng.uniform(3600, 3 * DAY_SECONDS), "referral")

    def comment(self) -> dict[str, str]:
        return {"comment": self.rng.choice(_COMMENTS)} if self.rng.random() < 0.1 else {}


_REVENUE_TYPES = frozenset(
    {
        "subscription_started",
        "subscription_changed",
        "subscription_renewed",
        "subscription_cancelled",
        "purchase",
    }
)


def _pick_plan(rng: random.Random, *, other_than: str | None = None) -> tuple[str, Decimal]:
    plans = [plan for plan in PLANS if plan[0] != other_than]
    name, mrr, _ = rng.choices(plans, [share for _, _, share in plans])[0]
    return name, mrr


def _geometric(rng: random.Random, p: float) -> int:
    """Failures before the first success, each trial succeeding with chance `p`."""
    return int(math.log(1 - rng.random()) / math.log(1 - p))


# -- delivery: order, duplicates, invalid lines -------------------------------------------------


def _deliver(rng: random.Random, config: GeneratorConfig, base: list[_Line]) -> list[_Line]:
    """Arrival order: event time, except a fraction delivered late by up to the max delay."""
    delivered = []
    for seq, line in enumerate(base):
        arrival = line.time
        if rng.random() < config.out_of_order_fraction:
            arrival += rng.uniform(1, config.max_delay_seconds)
        delivered.append(_Line(arrival, seq, line.time, line.body))
    return delivered


def _duplicates(
    rng: random.Random, config: GeneratorConfig, lines: list[_Line], count: int
) -> list[_Line]:
    """`count` exact copies of random lines, each arriving after its original."""
    if not lines:
        return []
    copies = []
    for n in range(count):
        original = lines[rng.randrange(len(lines))]
        arrival = original.arrival + rng.uniform(1, config.max_delay_seconds)
        copies.append(_Line(arrival, len(lines) + n, original.time, original.body))
    return copies


def _invalid_lines(
    rng: random.Random, config: GeneratorConfig, lines: list[_Line], count: int, start: float
) -> list[_Line]:
    """`count` lines the contract rejects, one of INVALID_KINDS each, at random arrival times."""
    made = []
    end = start + config.days * DAY_SECONDS
    for n in range(count):
        arrival = rng.uniform(start, end)
        kind = rng.choice(INVALID_KINDS)
        made.append(
            _Line(arrival, len(lines) + config.events + n, arrival, _invalid_body(kind, n, arrival))
        )
    return made


INVALID_KINDS = (
    "not_json",
    "unknown_type",
    "missing_subject",
    "negative_mrr",
    "score_out_of_scale",
    "bad_timestamp",
    "reserved_program",
    "end_before_start",
)


def _invalid_body(kind: str, n: int, at: float) -> dict[str, Any] | str:
    base: dict[str, Any] = {"event_id": f"invalid-{n}", "occurred_at": at, "visitor_id": f"bad{n}"}
    if kind == "not_json":
        return '{"event_id": "invalid-' + str(n) + '", "type": "session", '  # cut short
    if kind == "unknown_type":
        return {**base, "type": "page_view"}
    if kind == "missing_subject":
        return {
            "event_id": f"invalid-{n}",
            "type": "session",
            "occurred_at": at,
            "session_id": "x",
            "duration_seconds": 5,
        }
    if kind == "negative_mrr":
        return {**base, "type": "subscription_started", "mrr": -9.9}
    if kind == "score_out_of_scale":
        return {**base, "type": "survey_response", "survey": "csat", "score": 7, "scale": "1-5"}
    if kind == "bad_timestamp":
        return {**base, "type": "referral", "occurred_at": "yesterday"}
    if kind == "reserved_program":
        return {**base, "type": "referral", "program": "all"}
    return {**base, "type": "session", "session_id": "x", "started_at": at, "ended_at": at - 60}


def _render(body: dict[str, Any] | str) -> str:
    if isinstance(body, str):
        return body
    shown = {
        key: format_utc(round(value, 3))
        if key in _TIME_KEYS and isinstance(value, float)
        else value
        for key, value in body.items()
    }
    return json.dumps(shown, separators=(",", ":"))


_TIME_KEYS = frozenset({"occurred_at", "started_at", "ended_at"})
