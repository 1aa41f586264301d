"""Where the local services keep files that outlive one run (downloaded jars)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$STREAM_KPIS_CACHE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/stream-kpis`."""
    explicit = os.environ.get("STREAM_KPIS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "stream-kpis"
