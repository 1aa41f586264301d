"""Sums of subject contributions for one partition, bucketed, and rolled up at read time.

For every bucket size in use there is a sparse histogram {scopes: {bucket start: {component:
value}}}; a window of that bucket size is `base + the buckets at or after w0`. The `all`
window is `base + total`, where `total` is every delta ever added. Buckets that fall before
every window start are dropped as the clock moves; they are still in `total`.

Sums are kept per group of scopes, the keys of a contribution (see `contribution.py`): one
update of the group (web, all) serves both scopes, and `read` adds each group into each of its
scopes. A scope's value is the sum over the groups that hold it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from stream_kpis.contribution import Contribution, Key, Part
from stream_kpis.windows import WindowSpec

Components = dict[str, Any]
Scopes = tuple[str, ...]
# window name -> scope -> component -> value
WindowCounts = dict[str, dict[str, Components]]


class Aggregates:
    def __init__(self, windows: Iterable[WindowSpec]) -> None:
        self._windows = tuple(windows)
        self._sizes = sorted(
            {spec.bucket_seconds for spec in self._windows if spec.length_seconds is not None}
        )
        self._base: dict[Scopes, Components] = defaultdict(dict)
        self._total: dict[Scopes, Components] = defaultdict(dict)
        self._hist: dict[int, dict[Scopes, dict[float, Components]]] = {
            size: defaultdict(dict) for size in self._sizes
        }
        self._histograms = [(size, self._hist[size]) for size in self._sizes]
        self._kept_from: dict[int, float] = {size: -math.inf for size in self._sizes}

    def apply_change(self, old: Contribution, new: Contribution) -> None:
        """Replace a subject's old contribution with its new one."""
        if not old or not new:
            for scopes, part in (new or old).items():
                self._apply_part_change(scopes, {} if new else part, part if new else {})
            return
        if old.keys() == new.keys():
            for scopes, part in new.items():
                self._apply_part_change(scopes, old[scopes], part)
            return
        # The subject's programmes changed: compare scope by scope.
        old_parts, new_parts = _parts_by_scope(old), _parts_by_scope(new)
        for scope in old_parts.keys() | new_parts.keys():
            self._apply_part_change((scope,), old_parts.get(scope, {}), new_parts.get(scope, {}))

    def _apply_part_change(self, scopes: Scopes, old: Part, new: Part) -> None:
        add = self._add
        for key, value in new.items():
            previous = old.get(key)
            if previous is None:
                add(scopes, key, value)
            elif previous != value:
                add(scopes, key, value - previous)
        for key, value in old.items():
            if key not in new:
                add(scopes, key, -value)

    def _add(self, scopes: Scopes, key: Key, delta: Any) -> None:
        component, x = key
        if x is None:
            target = self._base[scopes]
            target[component] = target.get(component, 0) + delta
            return
        total = self._total[scopes]
        total[component] = total.get(component, 0) + delta
        for size, histogram in self._histograms:
            bucket = x - x % size
            if bucket < self._kept_from[size]:
                continue
            buckets = histogram[scopes]
            cells = buckets.get(bucket)
            if cells is None:
                cells = buckets[bucket] = {}
            cells[component] = cells.get(component, 0) + delta

    def read(self, clock: float) -> WindowCounts:
        """Components of every window and scope at the clock T."""
        self._drop_buckets_before_windows(clock)
        result: WindowCounts = {}
        groups = set(self._base) | set(self._total)
        scopes = {scope for group in groups for scope in group}
        for spec in self._windows:
            start = spec.start(clock)
            per_scope: dict[str, Components] = {scope: {} for scope in scopes}
            for group in groups:
                counts = dict(self._base.get(group, {}))
                if start is None:
                    _add_into(counts, self._total.get(group, {}))
                else:
                    for bucket, cells in self._hist[spec.bucket_seconds][group].items():
                        if bucket >= start:
                            _add_into(counts, cells)
                for scope in group:
                    _add_into(per_scope[scope], counts)
            result[spec.name] = {
                scope: {name: value for name, value in counts.items() if value}
                for scope, counts in per_scope.items()
            }
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


def _parts_by_scope(contribution: Contribution) -> dict[str, Part]:
    return {scope: part for scopes, part in contribution.items() for scope in scopes}


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
