"""Tests of the shipped Prometheus config and rules: promtool checks, promtool unit tests, and
that the rules cover every KPI and every alert is tested both firing and quiet.

promtool comes from Debian's `prometheus` package. In CI (CI=true) a missing promtool fails
these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from stream_kpis.kpis import KPIS
from stream_kpis.targets import GLOBAL_VALUE_RULE_BY_UNIT, Target, render_rules_yaml

PROMETHEUS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: apt-get install -y --no-install-recommends prometheus"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules_in(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def test_files_are_there() -> None:
    names = {path.name for path in RULE_FILES}
    assert {"kpis.yml", "alerts.yml", "targets.yml"} <= names
    assert {"kpis_test.yml", "alerts_test.yml", "targets_test.yml"} <= {p.name for p in TEST_FILES}


def test_prometheus_config_is_valid(promtool: str) -> None:
    result = run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", *RULE_FILES)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(promtool: str, test_file: Path) -> None:
    result = run(promtool, "test", "rules", test_file)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_reports_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    # The harness must be able to fail: the same rule with a wrong expected value.
    wrong = {
        "rule_files": [str(PROMETHEUS / "rules" / "kpis.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'stream_kpis_kpi_numerator{kpi="csat",window="7d",'
                        'program="all",partition="0"}',
                        "values": "1x5",
                    },
                    {
                        "series": 'stream_kpis_kpi_denominator{kpi="csat",window="7d",'
                        'program="all",partition="0"}',
                        "values": "4x5",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": "stream_kpis:kpi_ratio:global",
                        "eval_time": "2m",
                        "exp_samples": [
                            {
                                "labels": 'stream_kpis:kpi_ratio:global{kpi="csat",window="7d",'
                                'program="all"}',
                                "value": 0.3,  # 1 / 4 is 0.25
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "wrong_test.yml"
    path.write_text(yaml.safe_dump(wrong), encoding="utf-8")

    result = run(promtool, "test", "rules", path)

    assert result.returncode != 0
    assert "2.5E-01" in result.stdout + result.stderr


def test_generated_rules_with_awkward_names_pass_promtool(promtool: str, tmp_path: Path) -> None:
    targets = [
        Target("nps", "30d", ">=", 30, program='caf\u00e9 "north" \\ line'),
        Target("nps", "30d", "<", 90, program='caf\u00e9 "north" \\ line'),
        Target("csat", "7d", ">=", 0.8),
        Target("session_conversion_rate", "24h", ">=", 0.8),
    ]
    path = tmp_path / "targets.yml"
    path.write_text(render_rules_yaml(targets, source="test"), encoding="utf-8")

    result = run(promtool, "check", "rules", path)

    assert result.returncode == 0, result.stdout + result.stderr


def kpis_selected(expr: str) -> set[str]:
    """KPI names matched by the `kpi` matchers on the numerator sums in `expr`."""
    selected: set[str] = set()

    def visit(node: Any) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        if node.name != "stream_kpis:kpi_numerator:sum":
            return
        for matcher in node.matchers.matchers:
            if matcher.name != "kpi":
                continue
            for kpi in KPIS:
                if str(matcher.op).endswith("Re"):
                    hit = re.fullmatch(matcher.value, kpi.name) is not None
                else:
                    hit = matcher.value == kpi.name
                if hit:
                    selected.add(kpi.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return selected


def test_global_value_rules_cover_every_kpi_once() -> None:
    by_record: dict[str, set[str]] = {}
    for rule in rules_in(PROMETHEUS / "rules" / "kpis.yml"):
        if rule.get("record") in set(GLOBAL_VALUE_RULE_BY_UNIT.values()):
            by_record.setdefault(rule["record"], set()).update(kpis_selected(rule["expr"]))

    expected: dict[str, set[str]] = {}
    for kpi in KPIS:
        expected.setdefault(GLOBAL_VALUE_RULE_BY_UNIT[kpi.unit], set()).add(kpi.name)
    assert by_record == expected
    assert sum(len(names) for names in by_record.values()) == len(KPIS)


def test_every_recorded_series_is_unit_tested() -> None:
    records = {rule["record"] for path in RULE_FILES for rule in rules_in(path) if "record" in rule}
    tested_exprs = " ".join(
        case["expr"]
        for path in TEST_FILES
        for test in load(path)["tests"]
        for case in test.get("promql_expr_test", [])
    )

    untested = sorted(record for record in records if record not in tested_exprs)
    assert untested == []


def test_every_alert_is_explained_and_tested_firing_and_quiet() -> None:
    alerts = [rule for rule in rules_in(PROMETHEUS / "rules" / "alerts.yml") if "alert" in rule]
    cases = [
        case
        for test in load(PROMETHEUS / "tests" / "alerts_test.yml")["tests"]
        for case in test.get("alert_rule_test", [])
    ]

    assert len(alerts) >= 5
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("for"), name
        assert alert["labels"].get("severity") in {"page", "ticket"}, name
        assert alert["annotations"].get("summary"), name
        assert len(alert["annotations"].get("description", "")) > 80, name
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"{name} never shown firing"
        assert any(not case.get("exp_alerts") for case in mine), f"{name} never shown quiet"


def test_alerts_cover_the_spec() -> None:
    names = {rule.get("alert") for rule in rules_in(PROMETHEUS / "rules" / "alerts.yml")}

    assert {
        "StreamKpisChurnSpike",
        "StreamKpisPipelineStalled",
        "StreamKpisDeadLetterRateHigh",
        "StreamKpisConsumerLagHigh",
        "StreamKpisWorkerDown",
    } <= names


def test_every_rule_file_is_loaded_by_a_unit_test() -> None:
    loaded = {
        (path.parent / rule_file).resolve()
        for path in TEST_FILES
        for rule_file in load(path)["rule_files"]
    }

    assert {path.resolve() for path in RULE_FILES} <= loaded
