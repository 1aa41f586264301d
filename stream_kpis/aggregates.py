"""Sums of subject contributions for one partition, bucketed, and rolled up at read time.

For every bucket size in use there is a sparse histogram {scope: {bucket start: {component:
value}}}; a window of that bucket size is `base + the buckets at or after w0`. The `all`
window is `base + total`, where `total` is every delta ever added. Buckets that fall before
every window start are dropped as the clock moves; they are still in `total`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from stream_kpis.contribution import Contribution
from stream_kpis.windows import WindowSpec

Components = dict[str, Any]
# window name -> scope -> component -> value
WindowCounts = dict[str, dict[str, Components]]


class Aggregates:
    def __init__(self, windows: Iterable[WindowSpec]) -> None:
        self._windows = tuple(windows)
        self._sizes = sorted(
            {spec.bucket_seconds for spec in self._windows if spec.length_seconds is not None}
        )
        self._base: dict[str, Components] = defaultdict(dict)
        self._total: dict[str, Components] = defaultdict(dict)
        self._hist: dict[int, dict[str, dict[float, Components]]] = {
            size: defaultdict(dict) for size in self._sizes
        }
        self._kept_from: dict[int, float] = {size: -math.inf for size in self._sizes}

    def apply_change(self, old: Contribution, new: Contribution) -> None:
        """Replace a subject's old contribution with its new one."""
        for key in old.keys() | new.keys():
            delta = new.get(key, 0) - old.get(key, 0)
            if delta:
                self._add(key, delta)

    def _add(self, key: tuple[str, str, float | None], delta: Any) -> None:
        scope, component, x = key
        if x is None:
            target = self._base[scope]
            target[component] = target.get(component, 0) + delta
            return
        total = self._total[scope]
        total[component] = total.get(component, 0) + delta
        for size in self._sizes:
            bucket = math.floor(x / size) * size
            if bucket < self._kept_from[size]:
                continue
            cells = self._hist[size][scope].get(bucket)
            if cells is None:
                cells = self._hist[size][scope][bucket] = {}
            cells[component] = cells.get(component, 0) + delta

    def read(self, clock: float) -> WindowCounts:
        """Components of every window and scope at the clock T."""
        self._drop_buckets_before_windows(clock)
        result: WindowCounts = {}
        scopes = set(self._base) | set(self._total)
        for spec in self._windows:
            start = spec.start(clock)
            per_scope: dict[str, Components] = {}
            for scope in scopes:
                counts = dict(self._base.get(scope, {}))
                if start is None:
                    _add_into(counts, self._total.get(scope, {}))
                else:
                    for bucket, cells in self._hist[spec.bucket_seconds][scope].items():
                        if bucket >= start:
                            _add_into(counts, cells)
                per_scope[scope] = {name: value for name, value in counts.items() if value}
            result[spec.name] = per_scope
        return result

    def _drop_buckets_before_windows(self, clock: float) -> None:
        for size in self._sizes:
            starts = [
                spec.start(clock)
                for spec in self._windows
                if spec.bucket_seconds == size and spec.length_seconds is not None
            ]
            kept_from = min(start for start in starts if start is not None)
            if kept_from <= self._kept_from[size]:
                continue
            self._kept_from[size] = kept_from
            for buckets in self._hist[size].values():
                for bucket in [bucket for bucket in buckets if bucket < kept_from]:
                    del buckets[bucket]


def _add_into(target: Components, cells: Components) -> None:
    for component, value in cells.items():
        target[component] = target.get(component, 0) + value


def merge_counts(parts: Iterable[WindowCounts]) -> WindowCounts:
    """Add the components of several partitions (or workers) together."""
    merged: WindowCounts = {}
    for part in parts:
        for window, scopes in part.items():
            merged_scopes = merged.setdefault(window, {})
            for scope, counts in scopes.items():
                _add_into(merged_scopes.setdefault(scope, {}), counts)
    return merged
