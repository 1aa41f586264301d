"""The KPI snapshot: merged components turned into the JSON shape of KPI-SPEC section 5.

{"as_of": ..., "schema_version": 1,
 "windows": {window: {scope: {kpi: {"value", "numerator", "denominator", ...}}}},
 "targets": [...], "success_rate": {...}, "events": {...}}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from stream_kpis.aggregates import WindowCounts
from stream_kpis.kpis import (
    HISTOGRAM_COMPONENTS,
    KPIS,
    SESSION_DURATION_BUCKETS_SECONDS,
    KpiDefinition,
    Number,
    csat_margin_of_error,
    kpi_value,
    nps_margin_of_error,
)
from stream_kpis.timefmt import format_utc
from stream_kpis.windows import ALL_WINDOW

SCHEMA_VERSION = 1

# (window, scope, kpi) -> value or None
KpiValues = dict[tuple[str, str, str], float | None]
Judge = Callable[[KpiValues], tuple[list[dict[str, Any]], dict[str, Any]]]


def json_number(value: Number) -> int | float:
    """A component as a JSON number: integers stay integers, money becomes a float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def kpi_entry(kpi: KpiDefinition, window: str, components: Mapping[str, Number]) -> dict[str, Any]:
    if kpi.needs_cohort and window == ALL_WINDOW:
        return {"value": None, "numerator": 0, "denominator": 0}
    numerator, denominator = kpi.terms(dict(components))
    entry: dict[str, Any] = {
        "value": kpi_value(kpi, numerator, denominator),
        "numerator": json_number(numerator),
        "denominator": json_number(denominator),
    }
    if kpi.name == "csat":
        entry["margin_of_error"] = csat_margin_of_error(numerator, denominator)
    elif kpi.name in ("nps", "nps_5pt"):
        prefix = "nps_" if kpi.name == "nps" else "nps_5pt_"
        entry["margin_of_error"] = nps_margin_of_error(
            components.get(prefix + "promoters", 0),
            components.get(prefix + "detractors", 0),
            denominator,
        )
    elif kpi.name == "average_session_duration_seconds":
        entry["histogram"] = {
            "le_seconds": [*SESSION_DURATION_BUCKETS_SECONDS, None],
            "counts": [json_number(components.get(name, 0)) for name in HISTOGRAM_COMPONENTS],
        }
    return entry


def scope_kpis(window: str, components: Mapping[str, Number]) -> dict[str, Any]:
    return {kpi.name: kpi_entry(kpi, window, components) for kpi in KPIS}


def build_snapshot(
    counts: WindowCounts,
    *,
    as_of: float,
    window_names: Iterable[str],
    events: Mapping[str, Any] | None = None,
    judge: Judge | None = None,
    program: str | None = None,
) -> dict[str, Any]:
    """The snapshot for every window and scope (or one programme plus nothing else)."""
    windows: dict[str, Any] = {}
    values: KpiValues = {}
    for window in window_names:
        scopes = counts.get(window, {})
        names = sorted(scopes) if program is None else [program]
        if program is None and "all" not in names:
            names.insert(0, "all")
        windows[window] = {}
        for scope in names:
            entries = scope_kpis(window, scopes.get(scope, {}))
            windows[window][scope] = entries
            for kpi_name, entry in entries.items():
                values[(window, scope, kpi_name)] = entry["value"]

    targets, success = judge(values) if judge is not None else ([], {})
    return {
        "schema_version": SCHEMA_VERSION,
        "as_of": format_utc(as_of),
        "windows": windows,
        "targets": targets,
        "success_rate": success,
        "events": dict(events) if events is not None else {},
    }


def known_scopes(counts: WindowCounts) -> set[str]:
    return {scope for scopes in counts.values() for scope in scopes}


def dumps_snapshot(snapshot: dict[str, Any], *, indent: int | None = None) -> str:
    """The snapshot as JSON text (NaN never appears: no data is null)."""
    return json.dumps(snapshot, indent=indent, allow_nan=False)
