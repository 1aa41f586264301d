"""A real Prometheus scraping two workers of one group, with the rules shipped in deploy/.

After a replay, the recording rules' global KPI values (summed numerators over summed
denominators, over both workers and every partition) equal `compute` on the same events, the
target rules agree with the snapshot's target statuses, and every query of the Grafana
dashboard returns data.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stream_kpis.kpis import KPIS
from tests.integration.groups import (
    Feed,
    WorkerGroup,
    csat_lines,
    generated_lines,
    wait_for_stable_snapshot,
)
from tests.workers import offline_snapshot, produce, worker_env

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TARGETS_FILE = ROOT / "deploy" / "targets.example.toml"
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))

INTERVAL_SECONDS = 1
# Grafana's $__rate_interval is at least four scrape intervals.
RATE_INTERVAL = f"{4 * INTERVAL_SECONDS}s"
# The KPIs that need a starting cohort have none in `all`: nothing is exported for them there.
COHORT_KPIS = {kpi.name for kpi in KPIS if kpi.needs_cohort}
VALUE_RULES = (
    "stream_kpis:kpi_ratio:global",
    "stream_kpis:kpi_score:global",
    "stream_kpis:kpi_seconds:global",
)
WINDOW_HOURS = {"1h": 1, "24h": 24, "7d": 168, "30d": 720}
# Dashboard queries allowed to return nothing after this replay, with the reason. Empty: with
# late events, no-effect events and every programme in the data, every panel has data.
EXPECTED_EMPTY: dict[str, str] = {}


def prometheus_config(worker_ports: list[int]) -> str:
    targets = ", ".join(f"'127.0.0.1:{port}'" for port in worker_ports)
    rule_files = "\n".join(f"  - '{path}'" for path in RULE_FILES)
    return (
        "global:\n"
        f"  scrape_interval: {INTERVAL_SECONDS}s\n"
        f"  evaluation_interval: {INTERVAL_SECONDS}s\n"
        f"rule_files:\n{rule_files}\n"
        "scrape_configs:\n"
        "  - job_name: stream-kpis\n"
        "    static_configs:\n"
        f"      - targets: [{targets}]\n"
    )


@pytest.fixture(scope="module")
def scraped(kafka, redis_server, prometheus_factory, tmp_path_factory) -> Iterator[dict[str, Any]]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    env = worker_env(
        prefix,
        kafka.bootstrap_servers,
        redis_server.url,
        STREAM_KPIS_TARGETS_FILE=str(TARGETS_FILE),
    )
    started_at = time.time()
    group = WorkerGroup(env, tmp_path_factory.mktemp("prometheus"))
    prometheus = prometheus_factory(prometheus_config([w.port for w in group.workers]))
    feed = Feed(redis_server.url, prefix)
    try:
        group.start()
        lines = generated_lines(seed=23, events=2000)
        # CSAT answers from long before the rest, sent last: late when they arrive (older than
        # the longest window), applied all the same.
        lines += csat_lines("old", datetime(2025, 10, 1, tzinfo=UTC).timestamp(), 4, program="app")
        produce(kafka.bootstrap_servers, prefix, lines)
        wait_for_stable_snapshot(feed.snapshot, len(lines), describe=group.log_tails)
        rules = wait_for_stable_rules(prometheus, len(lines))
        yield {
            "prometheus": prometheus,
            "rules": rules,
            "expected": offline_snapshot(lines, targets_file=TARGETS_FILE),
            "started_at": started_at,
            "group": group,
        }
    finally:
        group.stop()
        feed.close()
        prometheus.close()


def wait_for_stable_rules(prometheus: Any, messages: int, timeout_seconds: float = 90) -> Any:
    """Wait until Prometheus has scraped every message and its rule values stop moving."""
    deadline = time.monotonic() + timeout_seconds
    previous = None
    while time.monotonic() < deadline:
        counted = prometheus.query("sum(stream_kpis_messages_total)")
        current = read_rules(prometheus)
        if counted and float(counted[0]["value"][1]) == messages:
            if current == previous:
                return current
            previous = current
        time.sleep(3 * INTERVAL_SECONDS)
    raise AssertionError(f"Prometheus' rule values did not settle in {timeout_seconds} s")


def read_rules(prometheus: Any) -> dict[str, dict[tuple[str, ...], float]]:
    def by_labels(query: str, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        return {
            tuple(series["metric"].get(label, "") for label in labels): float(series["value"][1])
            for series in prometheus.query(query)
        }

    kpi = ("kpi", "window", "program")
    values: dict[tuple[str, ...], float] = {}
    for rule in VALUE_RULES:
        found = by_labels(rule, kpi)
        assert not set(found) & set(values), f"{rule} repeats a KPI of another value rule"
        values.update(found)
    return {
        "numerator": by_labels("stream_kpis:kpi_numerator:sum", kpi),
        "denominator": by_labels("stream_kpis:kpi_denominator:sum", kpi),
        "value": values,
        "churn_per_hour": by_labels("stream_kpis:churn_per_active_customer_hour:global", kpi),
        "target_met": by_labels(
            "stream_kpis:target_met:global", ("program", "kpi", "window", "op", "threshold")
        ),
        "success": by_labels("stream_kpis:target_success_ratio:global", ("program",)),
    }


def test_recording_rules_equal_compute(scraped):
    expected, rules = scraped["expected"], scraped["rules"]
    checked = 0
    for window, scopes in expected["windows"].items():
        for program, kpis in scopes.items():
            for name, entry in kpis.items():
                key = (name, window, program)
                if window == "all" and name in COHORT_KPIS:
                    assert key not in rules["denominator"], key
                    continue
                assert close(rules["numerator"][key], entry["numerator"]), (key, entry)
                assert close(rules["denominator"][key], entry["denominator"]), (key, entry)
                if entry["value"] is None:
                    assert key not in rules["value"], f"{key} has no data but a value series"
                else:
                    assert close(rules["value"][key], entry["value"]), (key, entry)
                    checked += 1
    assert checked > 100, "most KPIs have data in the replay"
    assert len(rules["value"]) == checked, "no value series beyond the snapshot's"


def test_churn_per_active_customer_hour(scraped):
    expected, rules = scraped["expected"], scraped["rules"]
    for window, hours in WINDOW_HOURS.items():
        for program, kpis in expected["windows"][window].items():
            churn = kpis["churn_rate"]
            key = ("churn_rate", window, program)
            if churn["denominator"] == 0:
                assert key not in rules["churn_per_hour"], key
            else:
                by_hand = churn["numerator"] / hours / churn["denominator"]
                assert close(rules["churn_per_hour"][key], by_hand), key


def test_target_rules_agree_with_the_snapshot(scraped):
    expected, rules = scraped["expected"], scraped["rules"]
    statuses = {t["status"] for t in expected["targets"]}
    assert {"met", "missed"} <= statuses, "the example targets are both met and missed here"
    for target in expected["targets"]:
        found = [
            value
            for (program, kpi, window, op, _), value in rules["target_met"].items()
            if (program, kpi, window, op)
            == (target["program"], target["kpi"], target["window"], target["op"])
        ]
        if target["status"] == "no_data":
            assert found == [], target
        else:
            assert found == [1.0 if target["status"] == "met" else 0.0], target
    for program, rate in expected["success_rate"].items():
        if rate["value"] is None:
            assert (program,) not in rules["success"], program
        else:
            assert close(rules["success"][(program,)], rate["value"]), program


def test_lag_and_watermarks_cover_every_partition(scraped):
    prometheus, expected = scraped["prometheus"], scraped["expected"]
    lag = {
        (series["metric"]["topic"], series["metric"]["partition"]): float(series["value"][1])
        for series in prometheus.query("stream_kpis_consumer_lag_messages")
    }
    topics = {"sessions", "subscriptions", "surveys", "by_subject"}
    partitions = {str(p) for p in range(4)}
    assert set(lag) == {(topic, p) for topic in topics for p in partitions}
    assert set(lag.values()) == {0.0}, "every message was processed"

    watermarks = prometheus.query("stream_kpis_event_time_watermark_seconds")
    assert {series["metric"]["partition"] for series in watermarks} == partitions
    newest = datetime.fromisoformat(expected["as_of"].replace("Z", "+00:00")).timestamp()
    assert max(float(series["value"][1]) for series in watermarks) == pytest.approx(
        newest, abs=1e-3
    )
    assert {s["metric"]["instance"] for s in watermarks} == {
        f"127.0.0.1:{w.port}" for w in scraped["group"].workers
    }


@pytest.mark.parametrize("program", ["all", "web"])
def test_every_dashboard_query_returns_data(scraped, program):
    prometheus = scraped["prometheus"]
    variables = {"$__rate_interval": RATE_INTERVAL, "$program": program, "$window": "24h"}
    queries = dashboard_queries()
    assert len(queries) > 30

    empty = []
    for title, expr in queries:
        query = expr
        for name, value in sorted(variables.items(), key=lambda item: -len(item[0])):
            query = query.replace(name, value)
        assert "$" not in query, f"{title}: unknown variable in {expr}"
        data = prometheus.api(
            "query_range",
            query=query,
            start=str(scraped["started_at"]),
            end=str(time.time()),
            step=f"{INTERVAL_SECONDS}s",
        )
        finite = [
            value
            for series in data["result"]
            for _, value in series["values"]
            if math.isfinite(float(value))
        ]
        if not finite and expr not in EXPECTED_EMPTY:
            empty.append(f"{title}: {query}")
    assert empty == [], "dashboard queries without data:\n" + "\n".join(empty)


def test_dashboard_variables_list_every_programme_and_window(scraped):
    prometheus, expected = scraped["prometheus"], scraped["expected"]
    for dashboard in DASHBOARDS:
        variables = json.loads(dashboard.read_text())["templating"]["list"]
        for variable in (v for v in variables if v["type"] == "query"):
            definition = variable["definition"]
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
            assert match, definition
            metric, label = match.groups()
            values = set(prometheus.api(f"label/{label}/values", **{"match[]": metric}))
            wanted = set(expected["windows"]["30d"]) if label == "program" else {"1h", "24h"}
            assert wanted <= values, (definition, values)


def dashboard_queries() -> list[tuple[str, str]]:
    def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for panel in node.get("panels", []):
            yield panel
            yield from panels(panel)

    return [
        (panel.get("title", "?"), target["expr"])
        for path in DASHBOARDS
        for panel in panels(json.loads(path.read_text()))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def close(got: float, want: float) -> bool:
    return math.isclose(got, float(want), rel_tol=1e-9, abs_tol=1e-9)
