"""The benchmark runs end to end on a tiny stream and ends with a RESULT line that parses.

Only the shape of the output is checked: timings on a shared machine prove nothing here.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"
RESULT = re.compile(
    r"RESULT worker_vs_raw_ratio=(?P<ratio>\S+) worker_eps=(?P<worker>\d+) raw_eps=(?P<raw>\d+) "
    r"p99_latency_s=(?P<p99>\S+) rss_mb_per_100k_subjects=(?P<rss>\S+)"
)


def test_bench_runs_and_prints_a_result_line(kafka, redis_server, tmp_path):
    results_json = tmp_path / "results.json"
    finished = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--events",
            "2000",
            "--latency-seconds",
            "2",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--redis-url",
            redis_server.url,
            "--json",
            str(results_json),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]

    lines = finished.stdout.strip().splitlines()
    match = RESULT.fullmatch(lines[-1])
    assert match, lines[-1]
    values = {name: float(text) for name, text in match.groupdict().items()}
    assert all(math.isfinite(value) for value in values.values()), values
    assert values["worker"] > 0 and values["raw"] > 0
    assert values["ratio"] == pytest.approx(values["worker"] / values["raw"], rel=0.01, abs=1e-3)
    assert any(line.startswith("stream-kpis worker") for line in lines)
    assert results_json.exists()
