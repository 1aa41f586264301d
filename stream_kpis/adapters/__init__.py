"""Dataset adapters: public datasets mapped to the event contract (KPI-SPEC section 2).

Each adapter module exposes `iter_events(path, *, start=None, program=None)`, which yields
JSON-ready event dicts (times as RFC 3339 strings with `Z`, money as decimal strings) in
event-time order, with deterministic unique `event_id`s. `DATASETS` names them all; the two
datasets that may ship are bundled in the repository's `data/` folder and are the default
paths of their adapters. docs/datasets.md documents every mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from stream_kpis.adapters import cdnow, jsonl, kkbox, shoppers, telco
from stream_kpis.adapters._common import Event, retime, shift_events
from stream_kpis.errors import DatasetError

__all__ = ["DATASETS", "BUNDLED_DATA_DIR", "Dataset", "Event", "get", "retime", "shift_events"]

# The repository's data/ folder; present in a source checkout, not in an installed wheel.
BUNDLED_DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True, slots=True)
class Dataset:
    """A named adapter and where its data is by default."""

    name: str
    summary: str
    iter_events: Callable[..., Iterator[Event]]
    bundled_path: Path | None = None

    def events(
        self,
        path: str | Path | None = None,
        *,
        start: datetime | None = None,
        program: str | None = None,
    ) -> Iterator[Event]:
        """The dataset's events from `path`, or from its bundled copy when `path` is None."""
        if path is None:
            if self.bundled_path is None:
                raise DatasetError(f"dataset {self.name!r} is not bundled: give its path")
            if not self.bundled_path.exists():
                raise DatasetError(
                    f"the bundled copy of {self.name!r} is not at {self.bundled_path}: "
                    "give its path"
                )
            path = self.bundled_path
        return self.iter_events(path, start=start, program=program)


DATASETS: dict[str, Dataset] = {
    dataset.name: dataset
    for dataset in (
        Dataset(
            "shoppers",
            "UCI online shoppers: one session per row, purchases when Revenue is TRUE",
            shoppers.iter_events,
            BUNDLED_DATA_DIR / "online_shoppers_intention" / "online_shoppers_intention.csv",
        ),
        Dataset(
            "telco",
            "IBM telco churn: one subscription per customer, cancellations in Q1 2018",
            telco.iter_events,
            BUNDLED_DATA_DIR / "telco_customer_churn" / "WA_Fn-UseC_-Telco-Customer-Churn.csv",
        ),
        Dataset(
            "kkbox",
            "KKBox sample: subscription transactions and daily listening sessions (folder)",
            kkbox.iter_events,
        ),
        Dataset("cdnow", "CDNOW 1997-98: one purchase per customer-day", cdnow.iter_events),
        Dataset("jsonl", "events already in the contract, as JSONL", jsonl.iter_events),
    )
}


def get(name: str) -> Dataset:
    """The dataset called `name`; DatasetError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DatasetError(f"unknown dataset {name!r}: choose one of {known}") from None
