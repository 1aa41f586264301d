"""How each message ended: accepted (and of those, no effect and late), invalid by reason,
duplicate. Counted per partition in a JSON-ready dict so the worker can keep it in a table;
several partitions' counts merge by adding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

OutcomeCounts = dict[str, Any]


def new_counts() -> OutcomeCounts:
    return {"accepted": 0, "no_effect": 0, "invalid": {}, "duplicate": 0, "late": 0}


def count_invalid(counts: OutcomeCounts, reason: str) -> None:
    counts["invalid"][reason] = counts["invalid"].get(reason, 0) + 1


def merge_counts(parts: Iterable[Mapping[str, Any]]) -> OutcomeCounts:
    total = new_counts()
    for part in parts:
        for name in ("accepted", "no_effect", "duplicate", "late"):
            total[name] += part.get(name, 0)
        for reason, value in part.get("invalid", {}).items():
            total["invalid"][reason] = total["invalid"].get(reason, 0) + value
    total["invalid"] = dict(sorted(total["invalid"].items()))
    return total
