"""Build the stream-kpis Grafana dashboard (dashboards/stream-kpis.json) from the KPI table.

Run from the repository root after changing the KPIs or this layout:

    python deploy/grafana/build_dashboard.py

tests/test_dashboard.py fails when the JSON file differs from what this script writes, and checks
that every query parses and names only exported metrics or recording rules.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from stream_kpis.kpis import KPI_BY_NAME
from stream_kpis.targets import GLOBAL_VALUE_RULE_BY_UNIT

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "stream-kpis.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PROGRAM = 'program="$program"'

# Rows of KPIs, in the order a product team reads them.
KPI_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Revenue and retention",
        (
            "churn_rate",
            "customer_retention_rate",
            "net_dollar_retention",
            "gross_revenue_retention",
        ),
    ),
    (
        "Conversion",
        (
            "visitor_conversion_rate",
            "session_conversion_rate",
            "goal_completion_rate",
            "repeat_conversion_rate",
            "repeat_customer_rate",
            "advocate_conversion_rate",
        ),
    ),
    ("Satisfaction", ("csat", "nps", "nps_5pt")),
    ("Sessions", ("average_session_duration_seconds",)),
)

FIELD_DEFAULTS_BY_UNIT: dict[str, dict[str, Any]] = {
    "ratio": {"unit": "percentunit", "min": 0, "max": 1},
    "money_ratio": {"unit": "percentunit", "min": 0},
    "score": {"unit": "none", "min": -100, "max": 100, "decimals": 1},
    "seconds": {"unit": "s", "min": 0},
}
DENOMINATOR_MEANING = {
    "churn_rate": "customers active at any time in the window",
    "customer_retention_rate": "customers active at the window's start",
    "net_dollar_retention": "MRR at the window's start of the customers active then, in the "
    "reporting currency",
    "gross_revenue_retention": "MRR at the window's start of the customers active then, in the "
    "reporting currency",
    "average_session_duration_seconds": "sessions that ended in the window",
    "session_conversion_rate": "sessions that ended in the window",
    "goal_completion_rate": "sessions in the window that carried goal_reached",
    "visitor_conversion_rate": "visitors in the window who were not customers at its start",
    "repeat_conversion_rate": "customers with one revenue event at the start or a first in it",
    "advocate_conversion_rate": "repeat customers not yet advocates at the start",
    "repeat_customer_rate": "customers with a revenue event in the window",
    "csat": "CSAT responses in the window",
    "nps": "NPS responses on 0-10 in the window",
    "nps_5pt": "NPS responses on 1-5 in the window",
}


def title(kpi: str) -> str:
    special = {
        "csat": "CSAT",
        "nps": "NPS",
        "nps_5pt": "NPS (5-point)",
        "average_session_duration_seconds": "Average session duration",
    }
    return special.get(kpi, kpi.replace("_", " ").capitalize())


def target(expr: str, legend: str, ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"refId": ref, "datasource": DATASOURCE, "expr": expr, "legendFormat": legend, **extra}


class Layout:
    """Places panels on Grafana's 24-column grid, row by row, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.row_height = 0

    def row(self, name: str) -> None:
        self._newline()
        self._add({"type": "row", "title": name, "collapsed": False, "panels": []}, 24, 1)
        self._newline()

    def panel(self, panel: dict[str, Any], width: int, height: int = 8) -> None:
        if self.x + width > 24:
            self._newline()
        self._add(panel, width, height)

    def _add(self, panel: dict[str, Any], width: int, height: int) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0


def timeseries(
    name: str, description: str, targets: list[dict[str, Any]], defaults: dict[str, Any]
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": name,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": targets,
    }


def kpi_panels(layout: Layout, kpi: str) -> None:
    """The KPI over every window, and beside it its sample size (the denominator)."""
    definition = KPI_BY_NAME[kpi]
    selector = f'{{kpi="{kpi}",{PROGRAM}}}'
    value_rule = GLOBAL_VALUE_RULE_BY_UNIT[definition.unit]
    layout.panel(
        timeseries(
            f"{title(kpi)} ($program)",
            f"{title(kpi)} per window, from numerators and denominators summed over every "
            f"worker. No line means no data (a zero denominator).",
            [target(f"{value_rule}{selector}", "{{window}}")],
            FIELD_DEFAULTS_BY_UNIT[definition.unit],
        ),
        width=16,
    )
    layout.panel(
        timeseries(
            f"{title(kpi)}: sample size",
            f"The denominator: {DENOMINATOR_MEANING[kpi]}. Small samples swing.",
            [target(f"stream_kpis:kpi_denominator:sum{selector}", "{{window}}")],
            {"unit": "short", "min": 0},
        ),
        width=8,
    )


def targets_row(layout: Layout) -> None:
    layout.row("Targets")
    layout.panel(
        {
            "type": "stat",
            "title": "Targets met",
            "description": "Share of targets met among those with data, over every target "
            "(from the targets file). No value: no target has data.",
            "datasource": DATASOURCE,
            "fieldConfig": {
                "defaults": {"unit": "percentunit", "min": 0, "max": 1},
                "overrides": [],
            },
            "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
            "targets": [
                target('stream_kpis:target_success_ratio:global{program="all"}', "all"),
            ],
        },
        width=6,
    )
    layout.panel(
        {
            "type": "table",
            "title": "Target status (1 met, 0 missed; absent: no data)",
            "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True},
            "transformations": [{"id": "labelsToFields", "options": {"mode": "columns"}}],
            "targets": [
                target("stream_kpis:target_met:global", "", instant=True, format="table"),
            ],
        },
        width=18,
    )


def sessions_extra(layout: Layout) -> None:
    quantiles = [
        target(
            f"histogram_quantile({q}, sum by (le) "
            f'(stream_kpis:session_duration_seconds_bucket:sum{{window="$window",{PROGRAM}}}))',
            f"p{int(q * 100)}",
            ref=ref,
        )
        for ref, q in (("A", 0.5), ("B", 0.9))
    ]
    layout.panel(
        timeseries(
            "Session duration quantiles ($window, $program)",
            "Median and 90th percentile of session duration, estimated from the histogram "
            "buckets (10 s to 2 h).",
            quantiles,
            {"unit": "s", "min": 0},
        ),
        width=24,
    )


def pipeline_row(layout: Layout) -> None:
    layout.row("Pipeline health")
    rate = "[$__rate_interval]"
    panels = [
        (
            "Throughput by outcome",
            "Messages per second by topic and outcome (accepted, duplicate, invalid).",
            [
                target(
                    f"sum by (topic, outcome) (rate(stream_kpis_messages_total{rate}))",
                    "{{topic}} {{outcome}}",
                )
            ],
            {"unit": "ops", "min": 0},
        ),
        (
            "Invalid messages by reason",
            "Messages sent to the dead-letter topic per second, by topic and reason code.",
            [
                target(
                    f"sum by (topic, reason) (rate(stream_kpis_invalid_messages_total{rate}))",
                    "{{topic}} {{reason}}",
                )
            ],
            {"unit": "ops", "min": 0},
        ),
        (
            "Invalid share",
            "Invalid messages as a share of all messages, per topic (alert above 5%).",
            [
                target(
                    f'sum by (topic) (rate(stream_kpis_messages_total{{outcome="invalid"}}{rate}))'
                    f" / (sum by (topic) (rate(stream_kpis_messages_total{rate})) > 0)",
                    "{{topic}}",
                )
            ],
            {"unit": "percentunit", "min": 0},
        ),
        (
            "Late and no-effect events",
            "Accepted events older than the longest window (late), and accepted events that "
            "changed nothing, per second.",
            [
                target(
                    f"sum by (topic) (rate(stream_kpis_late_events_total{rate}))",
                    "late {{topic}}",
                ),
                target(
                    f"sum by (topic) (rate(stream_kpis_no_effect_events_total{rate}))",
                    "no effect {{topic}}",
                    ref="B",
                ),
            ],
            {"unit": "ops", "min": 0},
        ),
        (
            "Consumer lag",
            "Messages waiting, per topic, summed over partitions (alert above 100000).",
            [target("sum by (topic) (stream_kpis_consumer_lag_messages)", "{{topic}}")],
            {"unit": "short", "min": 0},
        ),
        (
            "Watermark delay",
            "Wall clock minus the newest event time applied, per worker. Large during a replay "
            "of old data.",
            [target("stream_kpis_processing_lag_seconds", "{{instance}}")],
            {"unit": "s", "min": 0},
        ),
        (
            "Workers",
            "Workers up (scraped), and the partitions each one owns.",
            [
                target('sum(up{job="stream-kpis"})', "workers up"),
                target("stream_kpis_assigned_partitions", "partitions {{instance}}", ref="B"),
            ],
            {"unit": "short", "min": 0},
        ),
        (
            "Snapshot publishing",
            "Redis reachable (1) per worker, and failed snapshot publishes per second.",
            [
                target("stream_kpis_redis_up", "redis up {{instance}}"),
                target(
                    f"sum by (instance) (rate(stream_kpis_snapshot_publish_errors_total{rate}))",
                    "errors {{instance}}",
                    ref="B",
                ),
            ],
            {"unit": "short", "min": 0},
        ),
    ]
    for name, description, targets, defaults in panels:
        layout.panel(timeseries(name, description, targets, defaults), width=12)


def variable(name: str, label: str, query: str, default: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "current": {"text": default, "value": default},
        "refresh": 2,
        "sort": 1,
        "includeAll": False,
        "multi": False,
    }


def dashboard() -> dict[str, Any]:
    layout = Layout()
    targets_row(layout)
    for row_name, kpis in KPI_ROWS:
        layout.row(row_name)
        for kpi in kpis:
            kpi_panels(layout, kpi)
        if row_name == "Sessions":
            sessions_extra(layout)
    pipeline_row(layout)

    return {
        "uid": "stream-kpis",
        "title": "stream-kpis: customer KPIs",
        "description": "Live KPIs per window and programme with their sample sizes, targets, "
        "and the health of the stream-kpis pipeline.",
        "tags": ["stream-kpis", "kpi"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Prometheus",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                },
                variable(
                    "program",
                    "Programme",
                    "label_values(stream_kpis:kpi_denominator:sum, program)",
                    "all",
                ),
                variable(
                    "window",
                    "Window (quantiles)",
                    "label_values(stream_kpis:session_duration_seconds_bucket:sum, window)",
                    "24h",
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": layout.panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
