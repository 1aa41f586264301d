"""The synthetic stream: deterministic, valid, shaped like real traffic, with its knobs."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner

from stream_kpis.compute import compute
from stream_kpis.engine import EngineConfig
from stream_kpis.errors import ConfigError
from stream_kpis.events import ContractConfig
from stream_kpis.generate import PLANS, GeneratorConfig, generate
from stream_kpis.timefmt import parse_timestamp
from stream_kpis.windows import parse_windows

START = datetime(2026, 1, 1, tzinfo=UTC)


def _events(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]


def _snapshot(lines: list[str]) -> dict:
    return compute(
        [line.encode() for line in lines],
        config=EngineConfig(windows=parse_windows(["30d"])),
        contract=ContractConfig(),
    )


@pytest.fixture(scope="module")
def stream() -> list[str]:
    return generate(GeneratorConfig(seed=7, events=20_000, start=START, days=90))


def test_same_seed_same_lines_other_seed_other_lines():
    config = GeneratorConfig(
        seed=11,
        events=2_000,
        start=START,
        duplicate_fraction=0.02,
        invalid_fraction=0.02,
        churn_spike_at=START + timedelta(days=40),
    )
    assert generate(config) == generate(config)
    other = GeneratorConfig(
        seed=12,
        events=2_000,
        start=START,
        duplicate_fraction=0.02,
        invalid_fraction=0.02,
        churn_spike_at=START + timedelta(days=40),
    )
    assert generate(other) != generate(config)


def test_writes_exactly_the_requested_number_of_lines(stream):
    assert len(stream) == 20_000
    assert generate(GeneratorConfig(events=0, start=START)) == []
    assert len(generate(GeneratorConfig(events=1, start=START))) == 1


def test_every_event_type_appears(stream):
    kinds = Counter(event["type"] for event in _events(stream))
    assert set(kinds) == {
        "session", "session_started", "session_heartbeat", "session_ended",
        "subscription_started", "subscription_changed", "subscription_renewed",
        "subscription_cancelled", "purchase", "survey_response", "referral",
    }  # fmt: skip


def test_by_default_every_line_is_valid_and_new(stream):
    snap = _snapshot(stream)
    assert snap["events"]["invalid"] == {}
    assert snap["events"]["duplicate"] == 0
    assert snap["events"]["accepted"] == len(stream)
    # The stream carries data for every KPI over the last 30 days.
    for name, entry in snap["windows"]["30d"]["all"].items():
        assert entry["denominator"], name


def test_event_ids_unique_and_times_within_the_span(stream):
    events = _events(stream)
    assert len({(e.get("customer_id") or e["visitor_id"], e["event_id"]) for e in events}) == len(
        events
    )
    times = [parse_timestamp(e["occurred_at"]) for e in events]
    assert min(times) >= START.timestamp()
    assert max(times) < (START + timedelta(days=90)).timestamp()


def test_mostly_in_event_time_order(stream):
    times = [parse_timestamp(e["occurred_at"]) for e in _events(stream)]
    newest, late = float("-inf"), []
    for time in times:
        if time < newest:
            late.append(newest - time)
        newest = max(newest, time)
    assert 0 < len(late) <= 0.03 * len(times)  # about 1% are delivered late
    assert max(late) <= 240  # the default longest delay, within the grace period


def test_no_late_lines_when_asked():
    lines = generate(GeneratorConfig(seed=3, events=3_000, start=START, out_of_order_fraction=0))
    times = [parse_timestamp(e["occurred_at"]) for e in _events(lines)]
    assert times == sorted(times)


def test_duplicates_and_invalid_lines_take_their_share():
    config = GeneratorConfig(
        seed=5, events=10_000, start=START, duplicate_fraction=0.03, invalid_fraction=0.02
    )
    lines = generate(config)
    assert len(lines) == 10_000
    snap = _snapshot(lines)
    assert snap["events"]["duplicate"] == 300
    assert sum(snap["events"]["invalid"].values()) == 200
    assert len(snap["events"]["invalid"]) >= 6  # several different reasons

    seen: set[str] = set()
    for line in lines:  # a duplicate is an exact copy arriving after its original
        if line in seen:
            continue
        seen.add(line)
    assert len(lines) - len(seen) >= 300 - 5  # (a line may be copied twice)


def test_daily_rhythm(stream):
    hours = Counter(
        datetime.fromisoformat(e["occurred_at"]).hour
        for e in _events(stream)
        if e["type"] == "session"
    )
    afternoon = sum(hours[h] for h in range(12, 18))
    night = sum(hours[h] for h in range(0, 6))
    assert afternoon > 2.5 * night


def test_plan_mix_and_mrr_values(stream):
    prices = {str(mrr) for _, mrr, _ in PLANS}
    starts = [e for e in _events(stream) if e["type"] == "subscription_started"]
    assert {e["mrr"] for e in starts} <= prices
    counts = Counter(e["plan"] for e in starts)
    assert counts["basic"] > counts["standard"] > counts["premium"] > 0


def test_survey_response_rates(stream):
    events = _events(stream)
    sessions = sum(1 for e in events if e["type"] in ("session", "session_started"))
    csat = [e for e in events if e.get("survey") == "csat"]
    nps = [e for e in events if e.get("survey") == "nps"]
    assert 0.03 < len(csat) / sessions < 0.10
    assert all(1 <= e["score"] <= 5 for e in csat)
    assert {e["scale"] for e in nps} == {"0-10", "1-5"}
    assert all(0 <= e["score"] <= 10 for e in nps)


def test_some_purchases_repeat_an_order_id(stream):
    orders = Counter(
        (e["customer_id"], e["order_id"]) for e in _events(stream) if e["type"] == "purchase"
    )
    assert 0 < sum(1 for n in orders.values() if n > 1) < 0.1 * len(orders)


def _cancellations_between(lines: list[str], low: datetime, high: datetime) -> int:
    return sum(
        1
        for e in _events(lines)
        if e["type"] == "subscription_cancelled"
        and low.timestamp() <= parse_timestamp(e["occurred_at"]) < high.timestamp()
    )


def test_churn_spike_raises_cancellations():
    spike = START + timedelta(days=60)
    base = GeneratorConfig(seed=9, events=40_000, start=START, days=90)
    spiked = GeneratorConfig(
        seed=9,
        events=40_000,
        start=START,
        days=90,
        churn_spike_at=spike,
        churn_spike_factor=30,
        churn_spike_hours=6,
    )
    window = (spike, spike + timedelta(hours=6))
    quiet = _cancellations_between(generate(base), *window)
    loud = _cancellations_between(generate(spiked), *window)
    assert loud >= 5
    assert loud > 4 * max(quiet, 1)


def test_money_is_plain_decimal_strings(stream):
    for event in _events(stream):
        for key in ("mrr", "amount"):
            if key in event:
                assert Decimal(event[key]) >= 0 and event[key].replace(".", "").isdigit()


@pytest.mark.parametrize(
    "bad",
    [
        {"events": -1},
        {"days": 0},
        {"programs": ("all",)},
        {"programs": ()},
        {"duplicate_fraction": 1.5},
        {"duplicate_fraction": 0.6, "invalid_fraction": 0.6},
    ],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        GeneratorConfig(**bad)


def test_default_start_ends_the_stream_before_today():
    lines = generate(GeneratorConfig(seed=1, events=500, days=10))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    times = [parse_timestamp(e["occurred_at"]) for e in _events(lines)]
    assert (today - timedelta(days=10)).timestamp() <= min(times)
    assert max(times) < today.timestamp() + 1  # (a run across midnight shifts by a day)


def test_cli_writes_the_same_stream(tmp_path):
    from stream_kpis.cli import main

    out = tmp_path / "events.jsonl"
    args = ["generate", "--seed", "4", "--events", "300", "--start", "2026-01-01T00:00:00Z",
            "--programs", "a,b", "--duplicates", "0.01", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    expected = generate(
        GeneratorConfig(
            seed=4, events=300, start=START, programs=("a", "b"), duplicate_fraction=0.01
        )
    )
    assert out.read_text().splitlines() == expected
    assert {json.loads(line)["program"] for line in expected} == {"a", "b"}

    to_stdout = CliRunner().invoke(main, args[:-2])
    assert to_stdout.stdout.splitlines() == expected


def test_cli_rejects_a_bad_time():
    from stream_kpis.cli import main

    result = CliRunner().invoke(main, ["generate", "--churn-spike-at", "soon"])
    assert result.exit_code == 2
    assert "--churn-spike-at" in result.output


def _cli(*args: str) -> tuple[int, str]:
    from stream_kpis.cli import main

    result = CliRunner().invoke(main, ["generate", "--events", "20", *args])
    return result.exit_code, result.output


def test_cli_names_an_output_it_cannot_write(tmp_path):
    target = tmp_path / "missing" / "x.jsonl"
    code, output = _cli("-o", str(target))
    assert code == 2, output
    assert f"--output '{target}': cannot write (No such file or directory)" in output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--days", "inf"), "Invalid value for '--days': 'inf' is not a finite number"),
        (("--days", "nan"), "Invalid value for '--days': 'nan' is not a finite number"),
        (("--days", "0"), "Invalid value for '--days': 0.0 is not in the range x>0"),
        (
            ("--days", "1e9"),
            "--days 1e+09: the stream would begin before 2000-01-01T00:00:00Z, the earliest time "
            "the event contract accepts",
        ),
        (("--days", "100000"), "--days 100000: the stream would begin before 2000-01-01"),
        (("--out-of-order", "nan"), "Invalid value for '--out-of-order': 'nan'"),
        (("--max-delay-seconds", "inf"), "Invalid value for '--max-delay-seconds': 'inf'"),
        (
            ("--start", "9999-12-31T00:00:00Z"),
            "--start '9999-12-31T00:00:00Z' with --days 90: the stream would end after the year",
        ),
        (
            ("--start", "2026-01-01T00:00:00Z", "--days", "1e9"),
            "--start '2026-01-01T00:00:00Z' with --days 1e+09: the stream would end after",
        ),
    ],
)
def test_cli_names_a_span_out_of_range(args, says):
    code, output = _cli(*args)
    assert code == 2, output
    assert says in output and "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--duplicates", "1"), "--duplicates 1 with --events 20 leaves no original event"),
        (
            ("--duplicates", "0.5", "--invalid", "0.5"),
            "--duplicates 0.5 with --events 20 and --invalid 0.5 leaves no original event",
        ),
    ],
)
def test_cli_refuses_duplicates_of_nothing(args, says, tmp_path):
    out = tmp_path / "x.jsonl"
    code, output = _cli(*args, "-o", str(out))
    assert code == 2, output
    assert says in output
    assert not out.exists()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (",", "--programs ',': names no programme; give comma-separated names such as web,app"),
        (" , ", "--programs ' , ': names no programme"),
        ("web,all", "--programs 'web,all': 'all': a programme is 1-128 characters and not"),
        ("web,app,web", "--programs 'web,app,web': 'web' is given twice"),
        (
            "x" * 129,
            "… (129 characters): " + "'" + "x" * 60 + "'… (129 characters): a programme",
        ),
        (
            "a," + "x" * 129,
            "… (131 characters): " + "'" + "x" * 60 + "'… (129 characters): a programme",
        ),
    ],
)
def test_cli_names_bad_programs(value, says, tmp_path):
    out = tmp_path / "x.jsonl"
    code, output = _cli("--programs", value, "-o", str(out))
    assert code == 2, output
    assert output.startswith("Error: --programs ") and says in output
    assert len(output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("start", "shown"),
    [
        ("0", "1970-01-01T00:00:00Z"),
        ("-5", "1969-12-31T23:59:55Z"),
        ("200000000000", "1976-05-03T19:33:20Z (read as epoch milliseconds)"),
        ("1999-12-31T23:59:59Z", "1999-12-31T23:59:59Z"),
    ],
)
def test_cli_refuses_a_start_before_the_contract_s_earliest_time(start, shown, tmp_path):
    out = tmp_path / "x.jsonl"
    code, output = _cli("--start", start, "--days", "1", "-o", str(out))
    assert code == 2, output
    assert output.strip() == (
        f"Error: --start {start!r} is {shown}, before 2000-01-01T00:00:00Z, the earliest time "
        "the event contract accepts: events before it would be invalid; give a later --start"
    )
    assert not out.exists()


def test_cli_takes_a_start_at_the_contract_s_earliest_time(tmp_path):
    out = tmp_path / "x.jsonl"
    code, output = _cli("--start", "946684800", "--days", "1", "-o", str(out))
    assert code == 0, output
    times = [parse_timestamp(e["occurred_at"]) for e in _events(out.read_text().splitlines())]
    assert min(times) >= 946_684_800


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--start", "99999999999999999999", "out of the years 1-9999 (read as epoch milliseconds)"),
        ("--start", "soon", "not a time"),
        ("--churn-spike-at", "inf", "not a time"),
    ],
)
def test_cli_time_errors_name_the_flag_the_value_and_the_forms(flag, value, says):
    code, output = _cli(flag, value)
    assert code == 2, output
    assert output.strip() == (
        f"Error: {flag} {value!r}: {says}; give RFC 3339 with an offset, such as "
        "2026-01-31T00:00:00Z, or epoch seconds (milliseconds above 10**11)"
    )
