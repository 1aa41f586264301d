"""Rolling windows and their bucket alignment (KPI-SPEC section 3).

A window of length L with bucket b covers the event times in [w0, T] where
w0 = floor(T / b) * b - L: the last L in whole buckets plus the current partial bucket. The
window named `all` covers every event up to T and has no start (w0 is None).

Specs are written `NAME=DURATION[/BUCKET]` or just `DURATION[/BUCKET]` (the name is then the
duration as written), with durations such as `90s`, `15m`, `1h`, `7d`, `2w`. Without a bucket,
windows up to 24 hours use 1-minute buckets and longer ones 1-hour buckets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce

from stream_kpis.errors import ConfigError

ALL_WINDOW = "all"
DEFAULT_WINDOWS = ("1h", "24h", "7d", "30d")

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    length_seconds: int | None  # None for `all`
    bucket_seconds: int

    def start(self, clock: float) -> float | None:
        """w0 for the clock T, or None for the `all` window."""
        if self.length_seconds is None:
            return None
        return math.floor(clock / self.bucket_seconds) * self.bucket_seconds - self.length_seconds


def parse_duration_seconds(text: str, *, what: str = "duration") -> int:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(
            f"{what}: {text!r} is not a positive whole duration such as 90s, 15m, 1h, 7d or 2w"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def default_bucket_seconds(length_seconds: int) -> int:
    return 60 if length_seconds <= 86400 else 3600


def parse_window(text: str) -> WindowSpec:
    """Parse `NAME=DURATION[/BUCKET]` or `DURATION[/BUCKET]`."""
    name, _, rest = text.rpartition("=")
    duration_text, _, bucket_text = rest.partition("/")
    name = name.strip() or duration_text.strip()
    if not _NAME.match(name) or name == ALL_WINDOW:
        raise ConfigError(
            f"window name {name!r} in {text!r} must be 1-32 letters, digits, '_', '.' or '-' "
            f"and not {ALL_WINDOW!r}"
        )
    length = parse_duration_seconds(duration_text, what=f"window {text!r}, length")
    if bucket_text:
        bucket = parse_duration_seconds(bucket_text, what=f"window {text!r}, bucket")
    else:
        bucket = default_bucket_seconds(length)
    if bucket > length or length % bucket:
        raise ConfigError(
            f"window {text!r}: the length ({length} s) must be a whole number of buckets "
            f"({bucket} s)"
        )
    return WindowSpec(name, length, bucket)


def parse_windows(texts: Iterable[str]) -> tuple[WindowSpec, ...]:
    """Parse window specs, append `all`, and reject duplicate names."""
    specs = [parse_window(text) for text in texts]
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(
            f"window names must be unique; repeated: {', '.join(duplicates)} (give a "
            "re-bucketed window its own name, e.g. hourly=1h/1h)"
        )
    finest = fine_bucket_seconds(specs)
    return (*specs, WindowSpec(ALL_WINDOW, None, finest))


def fine_bucket_seconds(specs: Iterable[WindowSpec]) -> int:
    """The largest bucket size that divides every window's bucket (their gcd)."""
    sizes = [spec.bucket_seconds for spec in specs if spec.length_seconds is not None]
    return reduce(math.gcd, sizes) if sizes else 60


def longest_window_seconds(specs: Iterable[WindowSpec]) -> int:
    lengths = [spec.length_seconds for spec in specs if spec.length_seconds is not None]
    return max(lengths, default=0)
