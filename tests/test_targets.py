"""Tests of stream_kpis.targets: the targets file, judging, success rate and generated rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from click.testing import CliRunner

from stream_kpis.cli import main
from stream_kpis.errors import ConfigError, TargetConfigError
from stream_kpis.targets import (
    Target,
    judge,
    load_targets,
    recording_rules,
    render_rules_yaml,
    success_rate,
    target_programs,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "targets.example.toml"
GENERATED = ROOT / "deploy" / "prometheus" / "rules" / "targets.yml"

VALID = """
[[target]]
kpi = "nps"
window = "30d"
op = ">="
threshold = 30

[[target]]
program = "shop"
kpi = "churn_rate"
window = "7d"
op = "<"
threshold = 0.02
"""


@pytest.fixture
def write_toml(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "targets.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def one_target(**fields: Any) -> str:
    """A [[target]] table from the fields given, rendered by hand as TOML."""
    lines = ["[[target]]"]
    for name, value in fields.items():
        lines.append(f"{name} = {value}")
    return "\n".join(lines) + "\n"


BASE = {"kpi": '"csat"', "window": '"7d"', "op": '">="', "threshold": "0.8"}


def test_load_targets(write_toml) -> None:
    targets = load_targets(write_toml(VALID))

    assert targets == [
        Target(kpi="nps", window="30d", op=">=", threshold=30, program="all"),
        Target(kpi="churn_rate", window="7d", op="<", threshold=0.02, program="shop"),
    ]


def test_example_file_loads() -> None:
    targets = load_targets(EXAMPLE, windows=("1h", "24h", "7d", "30d", "all"))

    assert len(targets) == 6
    assert target_programs(targets) == {"default"}


@pytest.mark.parametrize(
    ("change", "field", "bad_value", "says"),
    [
        ({"kpi": '"nsp"'}, "kpi", "nsp", "a KPI name"),
        ({"kpi": "3"}, "kpi", 3, "a KPI name"),
        ({"op": '"=>"'}, "op", "=>", ">=, <=, >, <"),
        ({"op": '"=="'}, "op", "==", ">=, <=, >, <"),
        ({"threshold": '"0.8"'}, "threshold", "0.8", "a number"),
        ({"threshold": "true"}, "threshold", True, "a number"),
        ({"threshold": "nan"}, "threshold", None, "from 0 to 1"),
        ({"threshold": "80"}, "threshold", 80, "write 2% as 0.02"),
        ({"threshold": "-0.1"}, "threshold", -0.1, "from 0 to 1"),
        ({"program": '""'}, "program", "", "1-128 characters"),
        ({"program": "7"}, "program", 7, "1-128 characters"),
        ({"window": '""'}, "window", "", "a window name"),
        ({"window": "30"}, "window", 30, "a window name"),
        ({"treshold": "0.8"}, "treshold", 0.8, "one of the fields"),
    ],
)
def test_invalid_field_names_field_and_value(
    write_toml, change: dict[str, str], field: str, bad_value: Any, says: str
) -> None:
    path = write_toml(VALID + one_target(**{**BASE, **change}))

    with pytest.raises(TargetConfigError) as caught:
        load_targets(path)

    error = caught.value
    assert error.field == field
    assert error.index == 2
    if bad_value is not None:  # nan is not equal to itself
        assert error.value == bad_value
        assert repr(bad_value) in str(error)
    assert f"target #3: field {field!r}" in str(error)
    assert says in str(error)
    assert str(path) in str(error)


@pytest.mark.parametrize("missing", ["kpi", "window", "op", "threshold"])
def test_missing_field(write_toml, missing: str) -> None:
    fields = {name: value for name, value in BASE.items() if name != missing}

    with pytest.raises(TargetConfigError, match=f"target #1: field '{missing}' is missing"):
        load_targets(write_toml(one_target(**fields)))


def test_thresholds_in_the_kpi_unit(write_toml) -> None:
    nps = one_target(kpi='"nps"', window='"30d"', op='">="', threshold="-100")
    ndr = one_target(kpi='"net_dollar_retention"', window='"30d"', op='">="', threshold="1.2")
    seconds = one_target(
        kpi='"average_session_duration_seconds"', window='"7d"', op='">"', threshold="600"
    )
    assert len(load_targets(write_toml(nps + ndr + seconds))) == 3

    too_high = one_target(kpi='"nps"', window='"30d"', op='">="', threshold="101")
    with pytest.raises(TargetConfigError, match="from -100 to 100 for nps"):
        load_targets(write_toml(too_high))
    negative = one_target(
        kpi='"average_session_duration_seconds"', window='"7d"', op='">"', threshold="-1"
    )
    with pytest.raises(TargetConfigError, match=">= 0"):
        load_targets(write_toml(negative))


def test_cohort_kpi_cannot_target_the_all_window(write_toml) -> None:
    text = one_target(kpi='"customer_retention_rate"', window='"all"', op='">="', threshold="0.9")

    with pytest.raises(TargetConfigError, match="no data in the 'all' window"):
        load_targets(write_toml(text))


def test_window_must_be_configured_when_windows_are_known(write_toml) -> None:
    path = write_toml(one_target(**{**BASE, "window": '"90d"'}))

    assert load_targets(path)[0].window == "90d"
    with pytest.raises(TargetConfigError, match="a configured window"):
        load_targets(path, windows=("1h", "7d", "all"))


def test_exact_duplicate_is_rejected(write_toml) -> None:
    text = one_target(**BASE) + one_target(**{**BASE, "threshold": "0.80"})

    with pytest.raises(TargetConfigError, match="target #2: repeats target #1"):
        load_targets(write_toml(text))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[targets]]\nkpi = 'nps'\n", "unknown top-level key 'targets'"),
        ("target = 3\n", "array of tables"),
        ("[[target]\n", "not valid TOML"),
    ],
)
def test_malformed_file(write_toml, text: str, says: str) -> None:
    with pytest.raises(TargetConfigError, match=says):
        load_targets(write_toml(text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_targets(tmp_path / "nope.toml")


def test_empty_file_has_no_targets(write_toml) -> None:
    assert load_targets(write_toml("# no goals yet\n")) == []


def test_judge() -> None:
    targets = [
        Target("nps", "30d", ">=", 30),
        Target("nps", "7d", ">=", 30),
        Target("churn_rate", "30d", "<=", 0.02, program="shop"),
        Target("churn_rate", "30d", "<", 0.02, program="shop"),
        Target("csat", "7d", ">", 0.8, program="shop"),
        Target("csat", "30d", ">", 0.8, program="shop"),
    ]
    values = {
        ("30d", "all", "nps"): 30.0,  # equal: >= is met
        ("7d", "all", "nps"): 29.9,
        ("30d", "shop", "churn_rate"): 0.02,  # equal: <= met, < missed
        ("7d", "shop", "csat"): None,  # no data
        # ("30d", "shop", "csat") absent: no data
    }

    judged = judge(targets, values)

    assert [entry["status"] for entry in judged] == [
        "met",
        "missed",
        "met",
        "missed",
        "no_data",
        "no_data",
    ]
    assert judged[2] == {
        "program": "shop",
        "kpi": "churn_rate",
        "window": "30d",
        "op": "<=",
        "threshold": 0.02,
        "status": "met",
    }


def test_success_rate_counts_every_target_in_all() -> None:
    judged = [
        {"program": "all", "status": "met"},
        {"program": "all", "status": "missed"},
        {"program": "shop", "status": "met"},
        {"program": "shop", "status": "met"},
        {"program": "shop", "status": "no_data"},
        {"program": "blog", "status": "no_data"},
    ]

    rates = success_rate(judged)

    # all: met 3 of the 4 with data; shop: 2 of 2; blog: none with data.
    assert rates == {
        "all": {"value": 0.75, "numerator": 3, "denominator": 4},
        "blog": {"value": None, "numerator": 0, "denominator": 0},
        "shop": {"value": 1.0, "numerator": 2, "denominator": 2},
    }
    assert list(rates) == ["all", "blog", "shop"]


def test_success_rate_without_targets() -> None:
    assert success_rate([]) == {"all": {"value": None, "numerator": 0, "denominator": 0}}


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def matcher_values(selector: promql_parser.VectorSelector) -> dict[str, str]:
    return {matcher.name: matcher.value for matcher in selector.matchers.matchers}


def test_recording_rules_per_target() -> None:
    targets = [
        Target("nps", "30d", ">=", 30),
        Target("churn_rate", "30d", "<=", 0.02, program="shop"),
        Target("average_session_duration_seconds", "7d", ">", 120.5, program="shop"),
    ]

    rules = recording_rules(targets)["groups"][0]["rules"]

    per_target = [rule for rule in rules if rule["record"] == "stream_kpis:target_met:global"]
    assert [rule["expr"] for rule in per_target] == [
        'stream_kpis:kpi_score:global{kpi="nps",window="30d",program="all"} >= bool 30',
        'stream_kpis:kpi_ratio:global{kpi="churn_rate",window="30d",program="shop"} <= bool 0.02',
        'stream_kpis:kpi_seconds:global{kpi="average_session_duration_seconds",window="7d",'
        'program="shop"} > bool 120.5',
    ]
    assert per_target[1]["labels"] == {
        "program": "shop",
        "kpi": "churn_rate",
        "window": "30d",
        "op": "<=",
        "threshold": "0.02",
    }
    records = [rule["record"] for rule in rules]
    assert records[3:] == [
        "stream_kpis:targets_met:sum",
        "stream_kpis:targets_met:sum",
        "stream_kpis:targets_with_data:count",
        "stream_kpis:targets_with_data:count",
        "stream_kpis:target_success_ratio:global",
    ]
    for rule in rules:
        promql_parser.parse(rule["expr"])


def test_programme_names_are_escaped_in_promql() -> None:
    awkward = 'café "north" \\ line'
    rule = recording_rules([Target("csat", "7d", ">=", 0.8, program=awkward)])["groups"][0][
        "rules"
    ][0]

    [selector] = selectors(rule["expr"])

    assert matcher_values(selector)["program"] == awkward


def test_rendered_yaml_round_trips() -> None:
    targets = load_targets(EXAMPLE)

    text = render_rules_yaml(targets, source="deploy/targets.example.toml")

    assert text.startswith("# Generated from deploy/targets.example.toml")
    assert yaml.safe_load(text) == recording_rules(targets)


def test_shipped_target_rules_match_the_example_file() -> None:
    expected = render_rules_yaml(load_targets(EXAMPLE), source="deploy/targets.example.toml")

    assert GENERATED.read_text(encoding="utf-8") == expected, (
        "deploy/prometheus/rules/targets.yml is stale: run "
        "`stream-kpis rules deploy/targets.example.toml -o deploy/prometheus/rules/targets.yml`"
    )


def test_rules_command_writes_the_rules_file(tmp_path: Path) -> None:
    output = tmp_path / "targets.yml"

    result = CliRunner().invoke(main, ["rules", str(EXAMPLE), "-o", str(output)])

    assert result.exit_code == 0, result.output
    expected = render_rules_yaml(load_targets(EXAMPLE), source=str(EXAMPLE))
    assert output.read_text(encoding="utf-8") == expected


def test_rules_command_rejects_an_unconfigured_window(write_toml) -> None:
    path = write_toml(one_target(**{**BASE, "window": '"90d"'}))

    refused = CliRunner().invoke(main, ["rules", str(path)])
    accepted = CliRunner().invoke(main, ["rules", str(path), "--window", "90d"])

    assert refused.exit_code == 2
    assert "field 'window' must be a configured window" in refused.output
    assert accepted.exit_code == 0, accepted.output
    assert 'stream_kpis:kpi_ratio:global{kpi="csat",window="90d",program="all"}' in accepted.output


def test_rules_command_names_an_output_it_cannot_write(tmp_path: Path) -> None:
    output = tmp_path / "missing" / "targets.yml"

    result = CliRunner().invoke(main, ["rules", str(EXAMPLE), "-o", str(output)])

    assert result.exit_code == 2
    assert f"--output '{output}': cannot write (No such file or directory)" in result.output


def test_rules_help_names_where_worker_windows_come_from() -> None:
    result = CliRunner().invoke(main, ["rules", "--help"])

    assert "STREAM_KPIS_WINDOWS" in result.output
    assert "given with --window" not in result.output
