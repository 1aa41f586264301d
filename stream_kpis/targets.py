"""KPI targets: the targets file, judging targets on global values, and the success rate.

A targets file is TOML with one `[[target]]` table per goal (KPI-SPEC section 4):

    [[target]]
    program = "all"      # optional, default "all"
    kpi = "nps"
    window = "30d"
    op = ">="            # one of >=, <=, >, <
    threshold = 30       # in the KPI's own unit: a fraction for rates, -100..100 for NPS

The same file feeds the snapshot (`judge`, `success_rate`) and Prometheus (`recording_rules`,
written out by `stream-kpis rules`), so the two never disagree about what a goal is.

Success rate: a programme's entry is the share met among that programme's targets with data;
the `all` entry is the share met among *every* target with data, the per-programme ones
included, so it answers "how many of our declared goals are we meeting". Targets on the `all`
scope count only in the `all` entry.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stream_kpis.errors import TargetConfigError
from stream_kpis.kpis import KPI_BY_NAME

logger = logging.getLogger(__name__)

ALL = "all"
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
FIELDS = ("program", "kpi", "window", "op", "threshold")
MAX_PROGRAM_CHARS = 128
MAX_WINDOW_CHARS = 32

# Allowed thresholds per KPI unit: (low, high), inclusive; None is unbounded.
THRESHOLD_RANGES: dict[str, tuple[float | None, float | None]] = {
    "ratio": (0.0, 1.0),
    "money_ratio": (0.0, None),
    "score": (-100.0, 100.0),
    "seconds": (0.0, None),
}

# The global value recorded by deploy/prometheus/rules/kpis.yml for each KPI unit.
GLOBAL_VALUE_RULE_BY_UNIT = {
    "ratio": "stream_kpis:kpi_ratio:global",
    "money_ratio": "stream_kpis:kpi_ratio:global",
    "score": "stream_kpis:kpi_score:global",
    "seconds": "stream_kpis:kpi_seconds:global",
}
TARGET_MET_RULE = "stream_kpis:target_met:global"
TARGETS_MET_RULE = "stream_kpis:targets_met:sum"
TARGETS_WITH_DATA_RULE = "stream_kpis:targets_with_data:count"
SUCCESS_RATIO_RULE = "stream_kpis:target_success_ratio:global"
RULE_GROUP = "stream-kpis-targets"

# (window, scope, kpi) -> value, or None for no data
KpiValues = Mapping[tuple[str, str, str], float | None]


@dataclass(frozen=True, slots=True)
class Target:
    kpi: str
    window: str
    op: str
    threshold: int | float
    program: str = ALL

    def is_met_by(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "kpi": self.kpi,
            "window": self.window,
            "op": self.op,
            "threshold": self.threshold,
        }


def load_targets(path: str | Path, *, windows: Collection[str] | None = None) -> list[Target]:
    """Read and validate a targets file; `windows`, when given, are the configured names."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise TargetConfigError("file not found", path=source) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise TargetConfigError(f"not valid TOML: {error}", path=source) from None
    except OSError as error:
        raise TargetConfigError(f"cannot be read: {error.strerror}", path=source) from None

    targets = parse_targets(data, source=source, windows=windows)
    logger.info("loaded %d targets from %s", len(targets), source)
    return targets


def parse_targets(
    data: Mapping[str, Any], *, source: str, windows: Collection[str] | None = None
) -> list[Target]:
    """Validate the decoded TOML document of a targets file."""
    unknown = sorted(set(data) - {"target"})
    if unknown:
        raise TargetConfigError(
            f"unknown top-level key {unknown[0]!r}; targets are [[target]] tables",
            path=source,
            field=unknown[0],
        )
    entries = data.get("target", [])
    if not isinstance(entries, list):
        raise TargetConfigError(
            "'target' must be an array of tables ([[target]])", path=source, field="target"
        )

    targets = [_parse_target(entry, source, index, windows) for index, entry in enumerate(entries)]
    _reject_duplicates(targets, source)
    return targets


def _parse_target(entry: Any, source: str, index: int, windows: Collection[str] | None) -> Target:
    def fail(field: str | None, value: object, expected: str) -> TargetConfigError:
        got = "" if field is None else f"; got {value!r}"
        subject = "the entry" if field is None else f"field {field!r}"
        return TargetConfigError(
            f"{subject} must be {expected}{got}", path=source, index=index, field=field, value=value
        )

    if not isinstance(entry, dict):
        raise fail(None, entry, "a table")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise fail(unknown[0], entry[unknown[0]], f"one of the fields {', '.join(FIELDS)}")
    for field in ("kpi", "window", "op", "threshold"):
        if field not in entry:
            raise TargetConfigError(
                f"field {field!r} is missing", path=source, index=index, field=field
            )

    program = entry.get("program", ALL)
    if not isinstance(program, str) or not 1 <= len(program) <= MAX_PROGRAM_CHARS:
        raise fail("program", program, f"a string of 1-{MAX_PROGRAM_CHARS} characters")

    kpi = entry["kpi"]
    if kpi not in KPI_BY_NAME:
        raise fail("kpi", kpi, f"a KPI name ({', '.join(KPI_BY_NAME)})")
    definition = KPI_BY_NAME[kpi]

    window = entry["window"]
    if not isinstance(window, str) or not 1 <= len(window) <= MAX_WINDOW_CHARS:
        raise fail("window", window, "a window name such as 30d")
    if windows is not None and window not in windows:
        raise fail("window", window, f"a configured window ({', '.join(windows)})")
    if definition.needs_cohort and window == ALL:
        raise fail("window", window, f"a rolling window: {kpi} has no data in the 'all' window")

    op = entry["op"]
    if op not in OPERATORS:
        raise fail("op", op, f"one of {', '.join(OPERATORS)}")

    threshold = entry["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise fail("threshold", threshold, "a number")
    low, high = THRESHOLD_RANGES[definition.unit]
    if (
        not math.isfinite(threshold)
        or (low is not None and threshold < low)
        or (high is not None and threshold > high)
    ):
        raise fail("threshold", threshold, _range_text(kpi, definition.unit, low, high))

    return Target(kpi=kpi, window=window, op=op, threshold=threshold, program=program)


def _range_text(kpi: str, unit: str, low: float | None, high: float | None) -> str:
    hint = {
        "ratio": " (a fraction: write 2% as 0.02)",
        "score": " (NPS points)",
        "seconds": " (seconds)",
        "money_ratio": " (a fraction that may exceed 1)",
    }[unit]
    if high is None:
        return f"a finite number >= {low:g} for {kpi}{hint}"
    return f"a number from {low:g} to {high:g} for {kpi}{hint}"


def _reject_duplicates(targets: list[Target], source: str) -> None:
    seen: dict[Target, int] = {}
    for index, target in enumerate(targets):
        if target in seen:
            raise TargetConfigError(
                f"repeats target #{seen[target] + 1} exactly",
                path=source,
                index=index,
                value=target.as_dict(),
            )
        seen[target] = index


def judge(targets: Iterable[Target], kpi_values: KpiValues) -> list[dict[str, Any]]:
    """Each target with its status: met, missed, or no_data (no value for its KPI)."""
    judged = []
    for target in targets:
        value = kpi_values.get((target.window, target.program, target.kpi))
        judged.append({**target.as_dict(), "status": _status(target, value)})
    return judged


def _status(target: Target, value: float | None) -> str:
    if value is None:
        return "no_data"
    return "met" if target.is_met_by(value) else "missed"


def success_rate(judged: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Share of targets met among those with data: per programme, and `all` over every target."""
    tallies: dict[str, list[int]] = {ALL: [0, 0]}
    for entry in judged:
        keys = {ALL, entry["program"]}
        for key in keys:
            met_and_with_data = tallies.setdefault(key, [0, 0])
            if entry["status"] != "no_data":
                met_and_with_data[1] += 1
                met_and_with_data[0] += entry["status"] == "met"

    ordered = [ALL, *sorted(key for key in tallies if key != ALL)]
    return {
        key: {
            "value": tallies[key][0] / tallies[key][1] if tallies[key][1] else None,
            "numerator": tallies[key][0],
            "denominator": tallies[key][1],
        }
        for key in ordered
    }


def recording_rules(targets: Iterable[Target]) -> dict[str, Any]:
    """Prometheus recording rules for the targets and the success rate (a rules-file document).

    Per target, `stream_kpis:target_met:global` is 1 when met, 0 when missed and absent when the
    global KPI has no data; its labels are the target's program, kpi, window, op and threshold.
    """
    rules: list[dict[str, Any]] = [_target_rule(target) for target in targets]
    per_program = f'{TARGET_MET_RULE}{{program!="{ALL}"}}'
    rules += [
        {"record": TARGETS_MET_RULE, "expr": f"sum by (program) ({per_program})"},
        {"record": TARGETS_MET_RULE, "expr": f"sum({TARGET_MET_RULE})", "labels": {"program": ALL}},
        {"record": TARGETS_WITH_DATA_RULE, "expr": f"count by (program) ({per_program})"},
        {
            "record": TARGETS_WITH_DATA_RULE,
            "expr": f"count({TARGET_MET_RULE})",
            "labels": {"program": ALL},
        },
        {"record": SUCCESS_RATIO_RULE, "expr": f"{TARGETS_MET_RULE} / {TARGETS_WITH_DATA_RULE}"},
    ]
    return {"groups": [{"name": RULE_GROUP, "rules": rules}]}


def _target_rule(target: Target) -> dict[str, Any]:
    value_rule = GLOBAL_VALUE_RULE_BY_UNIT[KPI_BY_NAME[target.kpi].unit]
    selector = ",".join(
        f"{label}={_promql_string(value)}"
        for label, value in (
            ("kpi", target.kpi),
            ("window", target.window),
            ("program", target.program),
        )
    )
    threshold = _number_text(target.threshold)
    return {
        "record": TARGET_MET_RULE,
        "expr": f"{value_rule}{{{selector}}} {target.op} bool {threshold}",
        # kpi, window and program repeat the series' own labels so that every rule has a
        # distinct label set (promtool flags same-name rules with equal labels).
        "labels": {
            "program": target.program,
            "kpi": target.kpi,
            "window": target.window,
            "op": target.op,
            "threshold": threshold,
        },
    }


def render_rules_yaml(targets: Iterable[Target], *, source: str) -> str:
    """The rules file for `targets`, with a header naming the targets file it came from."""
    header = (
        f"# Generated from {source} by `stream-kpis rules`.\n"
        "# Edit the targets file and generate again; do not edit this file by hand.\n"
    )
    body = yaml.safe_dump(recording_rules(targets), sort_keys=False, width=1000)
    return header + body


def target_programs(targets: Iterable[Target]) -> set[str]:
    """Programmes named by targets: give them to the metrics so they keep their own label."""
    return {target.program for target in targets if target.program != ALL}


def _promql_string(value: str) -> str:
    # JSON string escapes are a subset of the escapes PromQL accepts in double quotes.
    return json.dumps(value, ensure_ascii=False)


def _number_text(value: int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)
