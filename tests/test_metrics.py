"""Tests of stream_kpis.metrics: a fresh registry per test, values read back from it."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream_kpis.events import REASON_CODES
from stream_kpis.kpis import KPIS
from stream_kpis.metrics import WorkerMetrics, collected_now

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"

COHORT_KPIS = {"customer_retention_rate", "net_dollar_retention", "gross_revenue_retention"}


class FakeEngine:
    """Stands in for the engine's read(): returns whatever the test put in `components`."""

    def __init__(self, components: dict[int, Any] | None = None) -> None:
        self.components = components or {}
        self.reads = 0

    def read(self) -> dict[int, Any]:
        self.reads += 1
        return self.components


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def make_metrics(registry: CollectorRegistry, engine: FakeEngine, **options: Any) -> WorkerMetrics:
    return WorkerMetrics(registry, read_components=engine.read, **options)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    """Label sets of every sample called `name` in the registry."""
    return [
        dict(sample.labels)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


# Two partitions, two windows. Expected values below are worked out by hand from these.
TWO_PARTITIONS: dict[int, Any] = {
    0: {
        "1h": {
            "all": {
                "churned_customers": 2,
                "customers_active_in_window": 10,
                "nps_promoters": 3,
                "nps_detractors": 1,
                "nps_responses": 5,
                "sessions": 4,
                "session_duration_seconds": 400.0,
                "session_duration_bucket_0": 1,  # <= 10 s
                "session_duration_bucket_3": 2,  # (60, 120]
                "session_duration_bucket_10": 1,  # > 7200 s
                "mrr_at_start": Decimal("100.00"),
                "mrr_at_end_of_start_cohort": Decimal("110.50"),
            },
        },
        "all": {"all": {"churned_customers": 5, "customers_active_in_window": 50}},
    },
    1: {
        "1h": {
            "all": {
                "churned_customers": 1,
                "customers_active_in_window": 10,
                "nps_promoters": 1,
                "nps_detractors": 2,
                "nps_responses": 5,
                "sessions": 1,
                "session_duration_seconds": 200.0,
                "session_duration_bucket_3": 1,
            },
        },
    },
}


def test_partition_numerators_and_denominators(registry: CollectorRegistry) -> None:
    make_metrics(registry, FakeEngine(TWO_PARTITIONS))

    churn = {"kpi": "churn_rate", "window": "1h", "program": "all"}
    assert value(registry, "stream_kpis_kpi_numerator", **churn, partition="0") == 2
    assert value(registry, "stream_kpis_kpi_denominator", **churn, partition="0") == 10
    assert value(registry, "stream_kpis_kpi_numerator", **churn, partition="1") == 1
    # NPS numerator is promoters minus detractors: 3 - 1 and 1 - 2.
    nps = {"kpi": "nps", "window": "1h", "program": "all"}
    assert value(registry, "stream_kpis_kpi_numerator", **nps, partition="0") == 2
    assert value(registry, "stream_kpis_kpi_numerator", **nps, partition="1") == -1
    # Money arrives as Decimal and leaves as a float.
    ndr = {"kpi": "net_dollar_retention", "window": "1h", "program": "all", "partition": "0"}
    assert value(registry, "stream_kpis_kpi_numerator", **ndr) == 110.5
    assert value(registry, "stream_kpis_kpi_denominator", **ndr) == 100.0
    # A missing component is 0, and the series is still there.
    csat = {"kpi": "csat", "window": "1h", "program": "all", "partition": "1"}
    assert value(registry, "stream_kpis_kpi_denominator", **csat) == 0


def test_every_kpi_exported_per_partition_except_cohort_kpis_in_all_window(
    registry: CollectorRegistry,
) -> None:
    make_metrics(registry, FakeEngine(TWO_PARTITIONS))

    exported = {
        (labels["window"], labels["partition"], labels["kpi"])
        for labels in series(registry, "stream_kpis_kpi_denominator")
    }
    all_kpis = {kpi.name for kpi in KPIS}
    expected = {("1h", p, k) for p in ("0", "1") for k in all_kpis}
    expected |= {("all", "0", k) for k in all_kpis - COHORT_KPIS}
    assert exported == expected


def test_worker_values_merge_partitions_before_dividing(registry: CollectorRegistry) -> None:
    make_metrics(registry, FakeEngine(TWO_PARTITIONS))

    # churn: (2 + 1) / (10 + 10); not the mean of 0.2 and 0.1 weighted any other way.
    assert value(
        registry, "stream_kpis_kpi_ratio", kpi="churn_rate", window="1h", program="all"
    ) == pytest.approx(0.15)
    # NPS: 100 * ((3 - 1) + (1 - 2)) / (5 + 5) = 10
    assert value(
        registry, "stream_kpis_kpi_score", kpi="nps", window="1h", program="all"
    ) == pytest.approx(10.0)
    # average session duration: (400 + 200) / (4 + 1) = 120 s
    assert value(
        registry,
        "stream_kpis_kpi_seconds",
        kpi="average_session_duration_seconds",
        window="1h",
        program="all",
    ) == pytest.approx(120.0)
    # NDR, a money ratio, goes to the ratio gauge and may exceed 1: 110.50 / 100
    assert value(
        registry, "stream_kpis_kpi_ratio", kpi="net_dollar_retention", window="1h", program="all"
    ) == pytest.approx(1.105)
    assert value(
        registry, "stream_kpis_kpi_ratio", kpi="churn_rate", window="all", program="all"
    ) == pytest.approx(0.1)


def test_zero_denominator_gives_no_value_sample(registry: CollectorRegistry) -> None:
    make_metrics(registry, FakeEngine(TWO_PARTITIONS))

    ratio_kpis = {labels["kpi"] for labels in series(registry, "stream_kpis_kpi_ratio")}
    # csat has no responses, retention no customers at the start: no sample, not 0 or NaN.
    assert "csat" not in ratio_kpis
    assert "customer_retention_rate" not in ratio_kpis
    assert ratio_kpis == {
        "churn_rate",
        "net_dollar_retention",
        "gross_revenue_retention",
        "session_conversion_rate",  # 0 converted of 5 sessions is a value: 0
    }
    scores = series(registry, "stream_kpis_kpi_score")
    assert [labels["kpi"] for labels in scores] == ["nps"]  # nps_5pt has no responses


def test_session_duration_histogram(registry: CollectorRegistry) -> None:
    make_metrics(registry, FakeEngine(TWO_PARTITIONS))

    labels = {"window": "1h", "program": "all", "partition": "0"}
    bucket = "stream_kpis_session_duration_seconds_bucket"
    # Non-cumulative 1 (<=10 s), 2 (60-120 s), 1 (> 2 h) become cumulative counts.
    expected = {
        "10.0": 1,
        "30.0": 1,
        "60.0": 1,
        "120.0": 3,
        "300.0": 3,
        "600.0": 3,
        "900.0": 3,
        "1800.0": 3,
        "3600.0": 3,
        "7200.0": 3,
        "+Inf": 4,
    }
    got = {le: value(registry, bucket, **labels, le=le) for le in expected}
    assert got == expected
    assert value(registry, "stream_kpis_session_duration_seconds_count", **labels) == 4
    assert value(registry, "stream_kpis_session_duration_seconds_sum", **labels) == 400.0


def test_programmes_beyond_the_cap_are_summed_under_other(registry: CollectorRegistry) -> None:
    scopes = {
        "all": {"churned_customers": 10, "customers_active_in_window": 100},
        "delta": {"churned_customers": 4, "customers_active_in_window": 40},
        "alpha": {"churned_customers": 1, "customers_active_in_window": 10},
        "gamma": {"churned_customers": 3, "customers_active_in_window": 30},
        "beta": {"churned_customers": 2, "customers_active_in_window": 20},
    }
    make_metrics(registry, FakeEngine({0: {"1h": scopes}}), max_programs=2)

    numerators = {
        labels["program"]: value(registry, "stream_kpis_kpi_numerator", **labels)
        for labels in series(registry, "stream_kpis_kpi_numerator")
        if labels["kpi"] == "churn_rate"
    }
    # alpha and beta come first in sorted order; gamma (3) and delta (4) become other (7).
    assert numerators == {"all": 10, "alpha": 1, "beta": 2, "other": 7}
    assert value(
        registry, "stream_kpis_kpi_ratio", kpi="churn_rate", window="1h", program="other"
    ) == pytest.approx(7 / 70)


def test_configured_programmes_keep_their_label(registry: CollectorRegistry) -> None:
    scopes = {
        "all": {"churned_customers": 6},
        "alpha": {"churned_customers": 1},
        "beta": {"churned_customers": 2},
        "gamma": {"churned_customers": 3},
    }
    engine = FakeEngine({0: {"1h": scopes}})

    def churn_numerators(reg: CollectorRegistry) -> dict[str, float | None]:
        return {
            labels["program"]: value(reg, "stream_kpis_kpi_numerator", **labels)
            for labels in series(reg, "stream_kpis_kpi_numerator")
            if labels["kpi"] == "churn_rate"
        }

    # gamma is configured: it keeps its label although alpha and beta sort first.
    make_metrics(registry, engine, max_programs=1, programs=["gamma"])
    assert churn_numerators(registry) == {"all": 6, "gamma": 3, "other": 3}

    # One place left after gamma: alpha takes it, beta is folded.
    wider = CollectorRegistry()
    make_metrics(wider, engine, max_programs=2, programs=["gamma"])
    assert churn_numerators(wider) == {"all": 6, "alpha": 1, "gamma": 3, "other": 2}


def test_sum_over_workers_equals_one_worker() -> None:
    single, first, second = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    make_metrics(single, FakeEngine(TWO_PARTITIONS))
    make_metrics(first, FakeEngine({0: TWO_PARTITIONS[0]}))
    make_metrics(second, FakeEngine({1: TWO_PARTITIONS[1]}))

    def totals(*registries: CollectorRegistry) -> dict[tuple[str, ...], float]:
        summed: dict[tuple[str, ...], float] = {}
        for reg in registries:
            for name in ("stream_kpis_kpi_numerator", "stream_kpis_kpi_denominator"):
                for labels in series(reg, name):
                    key = (name, labels["kpi"], labels["window"], labels["program"])
                    sample = value(reg, name, **labels)
                    assert sample is not None
                    summed[key] = summed.get(key, 0.0) + sample
        return summed

    assert totals(first, second) == totals(single)


def test_lost_partition_vanishes_at_next_scrape(registry: CollectorRegistry) -> None:
    engine = FakeEngine(dict(TWO_PARTITIONS))
    make_metrics(registry, engine)
    assert {labels["partition"] for labels in series(registry, "stream_kpis_kpi_numerator")} == {
        "0",
        "1",
    }

    del engine.components[1]

    assert {labels["partition"] for labels in series(registry, "stream_kpis_kpi_numerator")} == {
        "0"
    }


def test_registering_does_not_read_the_engine(registry: CollectorRegistry) -> None:
    engine = FakeEngine(TWO_PARTITIONS)
    make_metrics(registry, engine)
    assert engine.reads == 0

    generate_latest(registry)
    assert engine.reads == 1


def test_failing_read_drops_kpi_series_but_not_the_scrape(registry: CollectorRegistry) -> None:
    def broken() -> dict[int, Any]:
        raise RuntimeError("state is being rebuilt")

    metrics = WorkerMetrics(registry, read_components=broken)
    metrics.count_outcome("sessions", "session", "accepted")

    text = generate_latest(registry).decode()

    assert "stream_kpis_kpi_numerator" not in text
    assert "stream_kpis_kpi_read_errors_total 1.0" in text
    assert (
        value(
            registry,
            "stream_kpis_messages_total",
            topic="sessions",
            type="session",
            outcome="accepted",
        )
        == 1
    )


def test_message_counters_and_label_clamping(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry, FakeEngine(), reasons=["not_json", "bad_score"])

    metrics.count_outcome("sessions", "session", "accepted")
    metrics.count_outcome("sessions", "session", "accepted")
    metrics.count_outcome("surveys", "survey_response", "duplicate")
    metrics.count_invalid("surveys", "bad_score", "survey_response")
    metrics.count_invalid("sessions", "not_json")  # no valid type: "unknown"
    metrics.count_invalid("sessions", "some_new_reason", "no_such_type")
    metrics.count_outcome("kafka-internal", "session", "accepted")

    messages = "stream_kpis_messages_total"
    assert value(registry, messages, topic="sessions", type="session", outcome="accepted") == 2
    assert (
        value(registry, messages, topic="surveys", type="survey_response", outcome="duplicate") == 1
    )
    assert value(registry, messages, topic="sessions", type="unknown", outcome="invalid") == 1
    assert value(registry, messages, topic="sessions", type="other", outcome="invalid") == 1
    assert value(registry, messages, topic="other", type="session", outcome="accepted") == 1

    invalid = "stream_kpis_invalid_messages_total"
    assert value(registry, invalid, topic="surveys", reason="bad_score") == 1
    assert value(registry, invalid, topic="sessions", reason="not_json") == 1
    assert value(registry, invalid, topic="sessions", reason="other") == 1


def test_unknown_outcome_is_a_programming_error(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry, FakeEngine())
    with pytest.raises(ValueError, match="outcome"):
        metrics.count_outcome("sessions", "session", "dropped")


def test_reasons_default_to_the_decoders_codes(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry, FakeEngine())

    metrics.count_invalid("sessions", "malformed_json")
    metrics.count_invalid("sessions", "a reason nobody declared")
    metrics.count_outcome("sessions", None, "invalid")  # no reason given

    invalid = "stream_kpis_invalid_messages_total"
    reasons = {labels["reason"] for labels in series(registry, invalid)}
    assert reasons == set(REASON_CODES) | {"other"}
    assert value(registry, invalid, topic="sessions", reason="malformed_json") == 1
    assert value(registry, invalid, topic="sessions", reason="other") == 2
    assert value(registry, invalid, topic="surveys", reason="wrong_topic") == 0


def test_counters_start_at_zero_for_every_topic_type_and_outcome(
    registry: CollectorRegistry,
) -> None:
    make_metrics(registry, FakeEngine(), reasons=["not_json"])

    assert (
        value(
            registry,
            "stream_kpis_messages_total",
            topic="subscriptions",
            type="purchase",
            outcome="accepted",
        )
        == 0
    )
    assert (
        value(
            registry,
            "stream_kpis_messages_total",
            topic="surveys",
            type="unknown",
            outcome="invalid",
        )
        == 0
    )
    assert (
        value(registry, "stream_kpis_invalid_messages_total", topic="surveys", reason="not_json")
        == 0
    )
    assert value(registry, "stream_kpis_redelivered_messages_total", topic="sessions") == 0


def test_no_effect_late_and_publish_error_counters(registry: CollectorRegistry) -> None:
    metrics = make_metrics(registry, FakeEngine())

    metrics.count_no_effect("subscriptions", "subscription_cancelled")
    metrics.count_late("sessions", "session")
    metrics.count_late("sessions", "session")
    metrics.count_publish_error()

    assert (
        value(
            registry,
            "stream_kpis_no_effect_events_total",
            topic="subscriptions",
            type="subscription_cancelled",
        )
        == 1
    )
    assert value(registry, "stream_kpis_late_events_total", topic="sessions", type="session") == 2
    assert value(registry, "stream_kpis_snapshot_publish_errors_total") == 1


def test_time_and_pipeline_gauges(registry: CollectorRegistry) -> None:
    now = [1_000.0]
    metrics = make_metrics(registry, FakeEngine(), wall_clock=lambda: now[0])

    assert math.isnan(value(registry, "stream_kpis_processing_lag_seconds") or 0.0)

    metrics.set_watermark(0, 900.0)
    metrics.set_watermark(1, 940.0)
    metrics.set_clock(1_000.0)
    metrics.set_consumer_lag("sessions", 0, 12)
    metrics.set_consumer_lag("sessions", 1, 3)
    metrics.set_assigned_partitions([0, 1])
    metrics.set_redis_up(True)
    metrics.mark_processed()
    now[0] = 1_010.0

    assert value(registry, "stream_kpis_event_time_watermark_seconds", partition="1") == 940.0
    # wall clock 1010 minus the newest watermark 940
    assert value(registry, "stream_kpis_processing_lag_seconds") == 70.0
    assert value(registry, "stream_kpis_clock_seconds") == 1_000.0
    assert (
        value(registry, "stream_kpis_consumer_lag_messages", topic="sessions", partition="0") == 12
    )
    assert value(registry, "stream_kpis_assigned_partitions") == 2
    assert value(registry, "stream_kpis_redis_up") == 1
    assert value(registry, "stream_kpis_last_processed_timestamp_seconds") == 1_000.0


def test_revoked_partitions_lose_their_gauges(registry: CollectorRegistry) -> None:
    now = [1_000.0]
    metrics = make_metrics(registry, FakeEngine(), wall_clock=lambda: now[0])
    metrics.set_watermark(0, 900.0)
    metrics.set_watermark(1, 990.0)
    metrics.set_consumer_lag("sessions", 0, 12)
    metrics.set_consumer_lag("sessions", 1, 3)

    metrics.set_assigned_partitions([0])

    assert series(registry, "stream_kpis_event_time_watermark_seconds") == [{"partition": "0"}]
    assert series(registry, "stream_kpis_consumer_lag_messages") == [
        {"topic": "sessions", "partition": "0"}
    ]
    assert value(registry, "stream_kpis_processing_lag_seconds") == 100.0  # 1000 - 900
    assert value(registry, "stream_kpis_assigned_partitions") == 1


def test_collected_now_freezes_a_scrape(registry: CollectorRegistry) -> None:
    engine = FakeEngine(dict(TWO_PARTITIONS))
    metrics = make_metrics(registry, engine)
    metrics.count_late("sessions", "session")
    live_text = generate_latest(registry)

    frozen = collected_now(registry)
    metrics.count_late("sessions", "session")
    del engine.components[1]

    assert generate_latest(frozen) == live_text
    assert engine.reads == 2  # the live scrape and the one collected_now made
    assert value(frozen, "stream_kpis_late_events_total", topic="sessions", type="session") == 1
    assert value(registry, "stream_kpis_late_events_total", topic="sessions", type="session") == 2


def exposed_metric_names(registry: CollectorRegistry) -> set[str]:
    """Names as Prometheus shows them: counters with `_total`, histograms by their base name."""
    names = set()
    for family in registry.collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def documented_metric_names() -> set[str]:
    """The metric names in the first column of the tables in docs/metrics.md."""
    names = set()
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`(stream_kpis_[a-z0-9_]+)`\s*\|", line)
        if match:
            names.add(match.group(1))
    return names


def test_docs_list_exactly_the_exported_metrics(registry: CollectorRegistry) -> None:
    make_metrics(registry, FakeEngine(TWO_PARTITIONS))

    exposed = exposed_metric_names(registry)

    assert len(exposed) == 22  # 9 counters, 7 gauges, 6 KPI families
    assert documented_metric_names() == exposed


def test_rewinds_and_empty_offsets_are_counted_per_topic_role_and_by_subject(
    registry: CollectorRegistry,
) -> None:
    metrics = make_metrics(registry, FakeEngine(TWO_PARTITIONS))
    for topic in ("sessions", "subscriptions", "surveys", "by_subject"):
        assert value(registry, "stream_kpis_input_rewinds_total", topic=topic) == 0
        assert value(registry, "stream_kpis_empty_input_offsets_total", topic=topic) == 0

    metrics.count_rewind("by_subject")
    metrics.count_rewind("sessions")
    metrics.count_rewind("sessions")
    metrics.count_empty_offsets("surveys", 35)

    assert value(registry, "stream_kpis_input_rewinds_total", topic="sessions") == 2
    assert value(registry, "stream_kpis_input_rewinds_total", topic="by_subject") == 1
    assert value(registry, "stream_kpis_empty_input_offsets_total", topic="surveys") == 35
