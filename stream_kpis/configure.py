"""Building the core's configuration objects from the one `Settings` object."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream_kpis.engine import EngineConfig
from stream_kpis.events import ContractConfig
from stream_kpis.settings import Settings
from stream_kpis.snapshot import Judge, KpiValues
from stream_kpis.targets import Target, judge, load_targets, success_rate
from stream_kpis.windows import parse_windows


def engine_config(settings: Settings, *, extra_windows: Iterable[str] = ()) -> EngineConfig:
    """The engine's configuration; `extra_windows` (from `--window`) add to the settings'."""
    return EngineConfig(
        windows=parse_windows([*settings.windows, *extra_windows]),
        grace_seconds=float(settings.grace_seconds),
        session_timeout_seconds=float(settings.session_timeout_seconds),
        dedup_horizon_seconds=float(settings.dedup_horizon_seconds),
    )


def contract_config(settings: Settings) -> ContractConfig:
    return ContractConfig(
        reporting_currency=settings.reporting_currency,
        exchange_rates=dict(settings.exchange_rates),
        max_skew_seconds=float(settings.max_skew_seconds),
    )


def targets_judge(targets: list[Target]) -> Judge:
    """A judge for `build_snapshot`: each target's status and the success rates."""

    def judged(values: KpiValues) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        statuses = judge(targets, values)
        return statuses, success_rate(statuses)

    return judged


def load_judge(settings: Settings, config: EngineConfig) -> Judge:
    if settings.targets_file is None:
        return targets_judge([])
    names = [spec.name for spec in config.windows]
    return targets_judge(load_targets(settings.targets_file, windows=names))
