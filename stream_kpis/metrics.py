"""Every Prometheus metric a worker exports, declared once, on a registry passed in.

Two kinds of metric live here:

- counters and gauges the worker updates as it processes messages (outcomes, invalid reasons,
  no-effect and late events, the event-time watermark, consumer lag, ...);
- the KPI state, read from the engine *at scrape time* by `KpiCollector`: per partition, the
  numerator and denominator of every KPI for every window and programme, the session-duration
  histogram, and worker-local KPI values for single-worker convenience. Nothing is mirrored on
  every write, and a partition the worker no longer owns is simply absent from the next scrape.

Global values are `sum` over workers of numerators and denominators, divided in PromQL (see
deploy/prometheus/rules). Label values come from small fixed sets only: unknown types and
reasons become `other`, and programmes beyond `max_programs` are summed under `other`.

`read_components` is called on the scraping thread. Serve `/metrics` from the event loop that
runs the engine, not from `prometheus_client.start_http_server`, whose thread would read the
engine's state mid-update. Formatting is the slow part of a large scrape (about 20 µs a sample
in prometheus-client), so a view can collect on the loop and format in a thread:

    frozen = collected_now(registry)  # on the event loop
    text = await loop.run_in_executor(None, generate_latest, frozen)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from stream_kpis.events import REASON_CODES, TOPIC_ROLES, TYPES_BY_TOPIC
from stream_kpis.kpis import (
    HISTOGRAM_COMPONENTS,
    KPIS,
    SESSION_DURATION_BUCKETS_SECONDS,
    KpiDefinition,
    Number,
    kpi_value,
)

logger = logging.getLogger(__name__)

# partition -> window -> scope (a programme or "all") -> component -> value
Components = Mapping[int, Mapping[str, Mapping[str, Mapping[str, Number]]]]
ReadComponents = Callable[[], Components]

OUTCOMES = ("accepted", "duplicate", "invalid")
ALL_SCOPE = "all"
OTHER = "other"
# The consumer-lag `topic` of the worker's internal by-subject topic (forwarded events).
BY_SUBJECT_TOPIC = "by_subject"
UNKNOWN_TYPE = "unknown"
EVENT_TYPES: frozenset[str] = frozenset().union(*TYPES_BY_TOPIC.values())

# The KPI value gauge a unit goes to; "money_ratio" (NDR) can exceed 1 but is still a ratio.
VALUE_METRIC_BY_UNIT = {
    "ratio": "stream_kpis_kpi_ratio",
    "money_ratio": "stream_kpis_kpi_ratio",
    "score": "stream_kpis_kpi_score",
    "seconds": "stream_kpis_kpi_seconds",
}
VALUE_HELP_BY_METRIC = {
    "stream_kpis_kpi_ratio": "Worker-local KPI value of a 0..1 ratio (NDR may exceed 1), "
    "merged over this worker's partitions; use the global recording rules across workers.",
    "stream_kpis_kpi_score": "Worker-local NPS on -100..100, merged over this worker's "
    "partitions; use the global recording rules across workers.",
    "stream_kpis_kpi_seconds": "Worker-local KPI value in seconds (average session duration), "
    "merged over this worker's partitions; use the global recording rules across workers.",
}

KPI_LABELS = ("kpi", "window", "program", "partition")
VALUE_LABELS = ("kpi", "window", "program")
HISTOGRAM_LABELS = ("window", "program", "partition")


class LabelClamp:
    """Maps a free value onto a small fixed set of label values; anything else is `other`."""

    def __init__(self, allowed: Collection[str]) -> None:
        self._allowed = frozenset(allowed)

    def __call__(self, value: str | None) -> str:
        return value if value is not None and value in self._allowed else OTHER


class WorkerMetrics:
    """The metrics of one worker process, on `registry`.

    `read_components` returns the engine's counted components per owned partition (see
    `Components`); it is called once per scrape. `programs` always keep their own label (pass
    the programmes named by targets); the other programmes fill the remaining places up to
    `max_programs` in sorted order, and the rest are summed under `other`. `reasons` is the fixed
    set of invalid-message reason codes. `wall_clock` is injectable for tests.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        read_components: ReadComponents,
        max_programs: int = 20,
        programs: Iterable[str] = (),
        reasons: Collection[str] = REASON_CODES,
        topics: Collection[str] = TOPIC_ROLES,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._topic = LabelClamp(topics)
        self._lag_topic = LabelClamp({*topics, BY_SUBJECT_TOPIC})
        self._reason = LabelClamp(reasons)
        self._wall_clock = wall_clock
        self._watermarks_seconds: dict[int, float] = {}
        self._lag_partitions: set[tuple[str, int]] = set()
        # Registered first so that a scrape's own failed read shows in the error counter
        # that the same scrape exposes.
        self.kpis = KpiCollector(
            read_components, max_programs=max_programs, programs=programs, metrics=self
        )
        registry.register(self.kpis)
        self._declare_counters(registry)
        self._declare_gauges(registry)
        self._initialise_counters(topics, reasons)

    def _declare_counters(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "stream_kpis_messages",
            "Input messages by topic role, event type and outcome (accepted, duplicate, invalid).",
            ("topic", "type", "outcome"),
            registry=registry,
        )
        self.invalid_messages = Counter(
            "stream_kpis_invalid_messages",
            "Invalid messages sent to the dead-letter topic, by topic role and reason code.",
            ("topic", "reason"),
            registry=registry,
        )
        self.no_effect_events = Counter(
            "stream_kpis_no_effect_events",
            "Accepted events that changed nothing (e.g. a cancellation of an inactive "
            "subscription, a part of an already final session, a repeated order).",
            ("topic", "type"),
            registry=registry,
        )
        self.late_events = Counter(
            "stream_kpis_late_events",
            "Accepted events older than the longest window when applied (informational).",
            ("topic", "type"),
            registry=registry,
        )
        self.snapshot_publish_errors = Counter(
            "stream_kpis_snapshot_publish_errors",
            "Failed attempts to publish the KPI snapshot to Redis.",
            registry=registry,
        )
        self.kpi_read_errors = Counter(
            "stream_kpis_kpi_read_errors",
            "Scrapes whose KPI state could not be read from the engine (KPI series then absent).",
            registry=registry,
        )
        self.redelivered_messages = Counter(
            "stream_kpis_redelivered_messages",
            "Messages read again after a crash or rebalance and skipped, because their effect "
            "was already in the recovered state, by topic role.",
            ("topic",),
            registry=registry,
        )
        self.input_rewinds = Counter(
            "stream_kpis_input_rewinds",
            "Times an input partition was read again from its next offset because the consumer "
            "delivered a later message first, by topic role or by_subject (docs/operations.md).",
            ("topic",),
            registry=registry,
        )
        self.empty_offsets = Counter(
            "stream_kpis_empty_input_offsets",
            "Input offsets found to hold no message (deleted by retention before they were "
            "read, or transaction markers), by topic role or by_subject.",
            ("topic",),
            registry=registry,
        )

    def _declare_gauges(self, registry: CollectorRegistry) -> None:
        self.watermark = Gauge(
            "stream_kpis_event_time_watermark_seconds",
            "Newest event time applied in the partition, Unix seconds.",
            ("partition",),
            registry=registry,
        )
        self.clock = Gauge(
            "stream_kpis_clock_seconds",
            "The worker's clock T (as_of) that windows end at, Unix seconds.",
            registry=registry,
        )
        self.processing_lag = Gauge(
            "stream_kpis_processing_lag_seconds",
            "Wall clock minus the newest event time applied on this worker; NaN before any.",
            registry=registry,
        )
        self.processing_lag.set_function(self._processing_lag_seconds)
        self.consumer_lag = Gauge(
            "stream_kpis_consumer_lag_messages",
            "Messages in the partition not yet processed (high watermark minus position).",
            ("topic", "partition"),
            registry=registry,
        )
        self.last_processed = Gauge(
            "stream_kpis_last_processed_timestamp_seconds",
            "Wall-clock time the worker last finished processing a message, Unix seconds.",
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "stream_kpis_assigned_partitions",
            "Input partitions currently assigned to this worker.",
            registry=registry,
        )
        self.redis_up = Gauge(
            "stream_kpis_redis_up",
            "1 when the last snapshot publish to Redis succeeded, else 0.",
            registry=registry,
        )

    def _initialise_counters(self, topics: Collection[str], reasons: Collection[str]) -> None:
        # Series at 0 from the start let rate() and increase() see the first messages, and let
        # the stalled-pipeline alert fire on a worker that never processed anything.
        for topic in topics:
            for event_type in sorted(TYPES_BY_TOPIC.get(topic, ())):
                for outcome in OUTCOMES:
                    self.messages.labels(topic, event_type, outcome)
            self.messages.labels(topic, UNKNOWN_TYPE, "invalid")
            self.redelivered_messages.labels(topic)
            for reason in sorted(reasons):
                self.invalid_messages.labels(topic, reason)
        for topic in (*topics, BY_SUBJECT_TOPIC):
            self.input_rewinds.labels(topic)
            self.empty_offsets.labels(topic)

    # -- counters --------------------------------------------------------------------------

    def count_outcome(
        self, topic: str, event_type: str | None, outcome: str, *, reason: str | None = None
    ) -> None:
        """Count one message's outcome; an invalid one is also counted under its reason."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        topic_label = self._topic(topic)
        self.messages.labels(topic_label, self._type(event_type), outcome).inc()
        if outcome == "invalid":
            self.invalid_messages.labels(topic_label, self._reason(reason)).inc()

    def count_invalid(self, topic: str, reason: str, event_type: str | None = None) -> None:
        """Count an invalid message: its outcome and its reason code."""
        self.count_outcome(topic, event_type, "invalid", reason=reason)

    def count_no_effect(self, topic: str, event_type: str) -> None:
        self.no_effect_events.labels(self._topic(topic), self._type(event_type)).inc()

    def count_late(self, topic: str, event_type: str) -> None:
        self.late_events.labels(self._topic(topic), self._type(event_type)).inc()

    def count_publish_error(self) -> None:
        self.snapshot_publish_errors.inc()

    def count_redelivered(self, topic: str) -> None:
        self.redelivered_messages.labels(self._topic(topic)).inc()

    def count_rewind(self, topic: str) -> None:
        self.input_rewinds.labels(self._lag_topic(topic)).inc()

    def count_empty_offsets(self, topic: str, offsets: int) -> None:
        self.empty_offsets.labels(self._lag_topic(topic)).inc(offsets)

    @staticmethod
    def _type(event_type: str | None) -> str:
        if event_type is None:
            return UNKNOWN_TYPE
        return event_type if event_type in EVENT_TYPES else OTHER

    # -- gauges ----------------------------------------------------------------------------

    def set_watermark(self, partition: int, event_time_seconds: float) -> None:
        self._watermarks_seconds[partition] = event_time_seconds
        self.watermark.labels(str(partition)).set(event_time_seconds)

    def set_clock(self, clock_seconds: float) -> None:
        self.clock.set(clock_seconds)

    def set_consumer_lag(self, topic: str, partition: int, messages: int) -> None:
        topic_label = self._lag_topic(topic)
        self._lag_partitions.add((topic_label, partition))
        self.consumer_lag.labels(topic_label, str(partition)).set(messages)

    def mark_processed(self, at_seconds: float | None = None) -> None:
        """Record that a message was processed, by default now (wall clock)."""
        self.last_processed.set(self._wall_clock() if at_seconds is None else at_seconds)

    def set_redis_up(self, up: bool) -> None:
        self.redis_up.set(1 if up else 0)

    def set_assigned_partitions(self, partitions: Iterable[int]) -> None:
        """Set the partitions this worker owns; series of partitions it lost are removed."""
        owned = set(partitions)
        self.assigned_partitions.set(len(owned))

        for partition in set(self._watermarks_seconds) - owned:
            del self._watermarks_seconds[partition]
            self.watermark.remove(str(partition))
        for topic_label, partition in {tp for tp in self._lag_partitions if tp[1] not in owned}:
            self._lag_partitions.discard((topic_label, partition))
            self.consumer_lag.remove(topic_label, str(partition))

    def _processing_lag_seconds(self) -> float:
        if not self._watermarks_seconds:
            return math.nan
        return self._wall_clock() - max(self._watermarks_seconds.values())


class KpiCollector:
    """Reads the engine's components at scrape time and yields the KPI metric families."""

    def __init__(
        self,
        read_components: ReadComponents,
        *,
        max_programs: int,
        programs: Iterable[str],
        metrics: WorkerMetrics,
    ) -> None:
        if max_programs < 0:
            raise ValueError(f"max_programs must be >= 0, got {max_programs}")
        self._read = read_components
        self._max_programs = max_programs
        self._programs = frozenset(programs)
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        # Names only, so that registering never calls into the engine.
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        try:
            by_partition = self._read()
        except Exception:
            logger.exception("could not read KPI components for /metrics")
            self._metrics.kpi_read_errors.inc()
            return

        labels = self.program_labels(
            scope
            for windows in by_partition.values()
            for scopes in windows.values()
            for scope in scopes
        )
        families = self._families()
        merged: dict[tuple[str, str], dict[str, Number]] = {}

        for partition, windows in sorted(by_partition.items()):
            for window, scopes in windows.items():
                for label, components in _fold_programs(scopes, labels).items():
                    self._add_partition(families, str(partition), window, label, components)
                    _add_into(merged.setdefault((window, label), {}), components)

        for (window, label), components in merged.items():
            self._add_values(families, window, label, components)
        yield from families.values()

    def program_labels(self, scopes: Iterable[str]) -> dict[str, str]:
        """The label of every scope: its own name, `all`, or `other` beyond the cap."""
        names = sorted({scope for scope in scopes if scope != ALL_SCOPE})
        places = max(self._max_programs - len(self._programs), 0)
        kept = self._programs | set([name for name in names if name not in self._programs][:places])
        labels = {name: (name if name in kept else OTHER) for name in names}
        labels[ALL_SCOPE] = ALL_SCOPE
        return labels

    def _families(self) -> dict[str, Metric]:
        families: dict[str, Metric] = {
            "stream_kpis_kpi_numerator": GaugeMetricFamily(
                "stream_kpis_kpi_numerator",
                "KPI numerator in the partition, per window and programme; sum over "
                "partitions and workers, then divide by the summed denominator.",
                labels=KPI_LABELS,
            ),
            "stream_kpis_kpi_denominator": GaugeMetricFamily(
                "stream_kpis_kpi_denominator",
                "KPI denominator (sample size) in the partition, per window and programme.",
                labels=KPI_LABELS,
            ),
            "stream_kpis_session_duration_seconds": HistogramMetricFamily(
                "stream_kpis_session_duration_seconds",
                "Durations of the sessions that ended in the window, per partition.",
                labels=HISTOGRAM_LABELS,
            ),
        }
        for name in sorted(set(VALUE_METRIC_BY_UNIT.values())):
            families[name] = GaugeMetricFamily(
                name, VALUE_HELP_BY_METRIC[name], labels=VALUE_LABELS
            )
        return families

    def _add_partition(
        self,
        families: dict[str, Metric],
        partition: str,
        window: str,
        program: str,
        components: dict[str, Number],
    ) -> None:
        numerators = families["stream_kpis_kpi_numerator"]
        denominators = families["stream_kpis_kpi_denominator"]
        assert isinstance(numerators, GaugeMetricFamily)
        assert isinstance(denominators, GaugeMetricFamily)

        for kpi in _kpis_in(window):
            numerator, denominator = kpi.terms(components)
            labels = (kpi.name, window, program, partition)
            numerators.add_metric(labels, float(numerator))
            denominators.add_metric(labels, float(denominator))

        histogram = families["stream_kpis_session_duration_seconds"]
        assert isinstance(histogram, HistogramMetricFamily)
        histogram.add_metric(
            (window, program, partition),
            session_duration_buckets(components),
            float(components.get("session_duration_seconds", 0)),
        )

    def _add_values(
        self,
        families: dict[str, Metric],
        window: str,
        program: str,
        components: dict[str, Number],
    ) -> None:
        for kpi in _kpis_in(window):
            value = kpi_value(kpi, *kpi.terms(components))
            if value is None:
                continue
            family = families[VALUE_METRIC_BY_UNIT[kpi.unit]]
            assert isinstance(family, GaugeMetricFamily)
            family.add_metric((kpi.name, window, program), value)


def session_duration_buckets(components: Mapping[str, Number]) -> list[tuple[str, float]]:
    """Cumulative `le` buckets from the non-cumulative bucket components; +Inf is `sessions`."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0.0
    for bound, component in zip(
        SESSION_DURATION_BUCKETS_SECONDS, HISTOGRAM_COMPONENTS, strict=False
    ):
        cumulative += float(components.get(component, 0))
        buckets.append((floatToGoString(bound), cumulative))
    buckets.append(("+Inf", float(components.get("sessions", 0))))
    return buckets


def _kpis_in(window: str) -> Iterator[KpiDefinition]:
    # The cohort KPIs have no starting cohort in the `all` window: nothing to export there.
    return (kpi for kpi in KPIS if not (kpi.needs_cohort and window == ALL_SCOPE))


def _fold_programs(
    scopes: Mapping[str, Mapping[str, Number]], labels: Mapping[str, str]
) -> dict[str, dict[str, Number]]:
    """One partition's scopes keyed by label, capped programmes summed under `other`."""
    folded: dict[str, dict[str, Number]] = {}
    for scope, components in sorted(scopes.items()):
        _add_into(folded.setdefault(labels[scope], {}), components)
    return folded


def _add_into(total: dict[str, Number], components: Mapping[str, Number]) -> None:
    for name, value in components.items():
        previous = total.get(name, 0)
        if isinstance(previous, Decimal) != isinstance(value, Decimal) and (
            isinstance(previous, float) or isinstance(value, float)
        ):
            # Decimal and float do not add; precision is lost only in this mixed case.
            total[name] = float(previous) + float(value)
        else:
            total[name] = previous + value  # type: ignore[operator]


class _Collected:
    """A collector that yields metric families collected earlier."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def collected_now(registry: CollectorRegistry) -> CollectorRegistry:
    """The registry's metrics as of now, frozen, so that they can be formatted on any thread."""
    frozen = CollectorRegistry(auto_describe=False)
    frozen.register(_Collected(list(registry.collect())))
    return frozen
