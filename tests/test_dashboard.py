"""Tests of the Grafana dashboard and of every PromQL expression shipped in deploy/.

Every query must parse (promql-parser) and name only metrics a worker exports (read from
metrics.py's registry) or series recorded by deploy/prometheus/rules.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream_kpis.kpis import COMPONENTS, HISTOGRAM_COMPONENTS, KPIS
from stream_kpis.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "stream-kpis.json"
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))

# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES = {"up"}

# Values for Grafana's template variables, so that queries become plain PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$program": "all",
    "$window": "24h",
}


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def exported_series() -> set[str]:
    """Every series name a worker exposes, with every KPI family populated."""
    every_component = {name: 1 for name in (*COMPONENTS, *HISTOGRAM_COMPONENTS)}
    registry = CollectorRegistry()
    WorkerMetrics(registry, read_components=lambda: {0: {"7d": {"all": every_component}}})
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for family in registry.collect():
        # A labelled counter with no sample yet still exposes its name with the suffix.
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def recorded_series() -> set[str]:
    return {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def rule_expressions() -> list[tuple[str, str]]:
    return [
        (f"{path.name}: {rule.get('record') or rule.get('alert')}", rule["expr"])
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"panel {panel['id']} {panel['title']}", target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def plain_promql(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def selected_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_dashboard_file_is_up_to_date() -> None:
    builder = load_builder()

    assert DASHBOARD.read_text(encoding="utf-8") == builder.render(), (
        "deploy/grafana/dashboards/stream-kpis.json is stale: run "
        "`python deploy/grafana/build_dashboard.py`"
    )


def test_every_query_parses_and_names_known_series(dashboard: dict[str, Any]) -> None:
    known = exported_series() | recorded_series() | PROMETHEUS_SERIES
    expressions = dashboard_expressions(dashboard) + rule_expressions()
    assert len(expressions) > 50

    unknown = {}
    for where, expr in expressions:
        names = selected_names(plain_promql(expr))
        assert names, f"{where}: selects nothing"
        if names - known:
            unknown[where] = sorted(names - known)
    assert unknown == {}


def test_an_unknown_metric_would_be_caught() -> None:
    known = exported_series() | recorded_series()

    assert selected_names("rate(stream_kpis_messages_total[5m])") <= known
    assert not selected_names("stream_kpis_kpi_ratio_total") <= known
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (kpi (stream_kpis_kpi_ratio)")


def test_template_variables_query_recorded_series(dashboard: dict[str, Any]) -> None:
    variables = {item["name"]: item for item in dashboard["templating"]["list"]}
    assert {"datasource", "program", "window"} <= set(variables)

    for name in ("program", "window"):
        match = re.fullmatch(r"label_values\((\S+), (\w+)\)", variables[name]["query"]["query"])
        assert match, variables[name]
        assert match.group(1) in recorded_series()
        assert match.group(2) == name
    assert variables["program"]["current"]["value"] == "all"


def test_every_kpi_over_every_window_with_its_sample_size_beside_it(
    dashboard: dict[str, Any],
) -> None:
    panels = [panel for panel in all_panels(dashboard) if panel["type"] == "timeseries"]
    by_position = {(p["gridPos"]["x"], p["gridPos"]["y"]): p for p in panels}

    for kpi in KPIS:
        [value_panel] = [
            panel
            for panel in panels
            if any(
                f'kpi="{kpi.name}"' in target["expr"] and ":global" in target["expr"]
                for target in panel["targets"]
            )
        ]
        [target] = value_panel["targets"]
        # No window matcher: every window is a line, named by the legend.
        assert "window=" not in target["expr"]
        assert target["legendFormat"] == "{{window}}"
        assert 'program="$program"' in target["expr"]

        position = value_panel["gridPos"]
        beside = by_position[(position["x"] + position["w"], position["y"])]
        [sample_size] = beside["targets"]
        assert (
            sample_size["expr"]
            == f'stream_kpis:kpi_denominator:sum{{kpi="{kpi.name}",program="$program"}}'
        )


def test_pipeline_health_row(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    [row_index] = [
        i for i, p in enumerate(panels) if p["type"] == "row" and "Pipeline" in p["title"]
    ]
    row_exprs = " ".join(
        target["expr"] for panel in panels[row_index + 1 :] for target in panel.get("targets", [])
    )

    for metric in (
        "stream_kpis_messages_total",  # throughput
        "stream_kpis_invalid_messages_total",  # invalid rate
        "stream_kpis_late_events_total",  # late rate
        "stream_kpis_consumer_lag_messages",  # consumer lag
        "stream_kpis_processing_lag_seconds",  # watermark delay
    ):
        assert metric in row_exprs


def test_panel_ids_unique_and_grid_does_not_overlap(dashboard: dict[str, Any]) -> None:
    panels = all_panels(dashboard)
    assert len({panel["id"] for panel in panels}) == len(panels)

    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


def test_provisioning_matches_the_dashboard(dashboard: dict[str, Any]) -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "stream-kpis.yml").read_text(encoding="utf-8")
    )

    [source] = datasources["datasources"]
    assert source["type"] == "prometheus"
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["current"]["value"] == source["uid"]
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
