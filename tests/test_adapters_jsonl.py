"""The JSONL passthrough adapter and the shared time helpers of the adapters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from stream_kpis.adapters import DATASETS, get, jsonl, retime, shift_events
from stream_kpis.adapters._common import finish, format_time, money
from stream_kpis.errors import DatasetError


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_passthrough_keeps_file_order_and_skips_blank_lines(tmp_path):
    a = {"event_id": "a", "type": "referral", "occurred_at": "2026-01-02T00:00:00Z"}
    b = {"event_id": "b", "type": "referral", "occurred_at": "2026-01-01T00:00:00Z"}
    path = _write(tmp_path, [json.dumps(a), "", "   ", json.dumps(b)])
    assert list(jsonl.iter_events(path)) == [a, b]


def test_a_line_that_is_not_an_object_is_named(tmp_path):
    path = _write(tmp_path, ['{"event_id": "a"}', "[1, 2]"])
    with pytest.raises(DatasetError, match="line 2"):
        list(jsonl.iter_events(path))
    path = _write(tmp_path, ["{oops"])
    with pytest.raises(DatasetError, match="line 1 is not JSON"):
        list(jsonl.iter_events(path))


def test_start_shifts_every_form_of_time(tmp_path):
    lines = [
        {"event_id": "a", "occurred_at": "2026-01-01T10:00:00+02:00"},  # 08:00Z, the earliest
        {"event_id": "b", "occurred_at": 1767261600},  # 2026-01-01T10:00:00Z, epoch seconds
        {"event_id": "c", "occurred_at": 1767265200000},  # 11:00Z, epoch milliseconds
        {
            "event_id": "d",
            "type": "session",
            "occurred_at": "x",
            "ended_at": "2026-01-01T12:00:00Z",
        },
        {"event_id": "e", "occurred_at": "not a time"},
    ]
    path = _write(tmp_path, [json.dumps(line) for line in lines])
    start = datetime(2026, 3, 1, tzinfo=UTC)
    shifted = list(jsonl.iter_events(path, start=start, program="p"))
    offset_seconds = 59 * 86400 - 8 * 3600  # 2026-01-01T08:00Z to 2026-03-01T00:00Z
    assert [e["occurred_at"] for e in shifted] == [
        "2026-03-01T00:00:00Z",
        1767261600 + offset_seconds,
        1767265200000 + offset_seconds * 1000,
        "x",
        "not a time",
    ]
    assert shifted[3]["ended_at"] == "2026-03-01T04:00:00Z"
    assert {e["program"] for e in shifted} == {"p"}


def test_retime_puts_the_latest_event_at_the_end():
    events = [
        {"type": "purchase", "occurred_at": "2017-03-01T00:00:00Z"},
        {
            "type": "session",
            "occurred_at": "2017-03-05T00:00:00Z",
            "ended_at": "2017-03-09T00:00:00Z",
        },
        {"type": "purchase", "occurred_at": "2017-03-08T00:00:00Z"},
    ]
    end = datetime(2026, 5, 1, 12, tzinfo=UTC)
    moved = retime(events, end)
    assert moved[1]["ended_at"] == "2026-05-01T12:00:00Z"
    assert moved[0]["occurred_at"] == "2026-04-23T12:00:00Z"
    assert events[0]["occurred_at"] == "2017-03-01T00:00:00Z"  # the input is not changed


def test_shift_events_leaves_absent_and_null_times_alone():
    moved = list(shift_events([{"occurred_at": None}, {}], timedelta(days=1)))
    assert moved == [{"occurred_at": None}, {}]


def test_finish_orders_by_event_time_and_keeps_ties_in_build_order():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    built = [
        {"event_id": "late", "type": "purchase", "occurred_at": at + timedelta(hours=1)},
        {"event_id": "tie-1", "type": "purchase", "occurred_at": at},
        {"event_id": "tie-2", "type": "purchase", "occurred_at": at},
        {"event_id": "s", "type": "session", "occurred_at": at, "ended_at": at - timedelta(1)},
    ]
    done = list(finish(built))
    assert [e["event_id"] for e in done] == ["s", "tie-1", "tie-2", "late"]
    assert done[1]["occurred_at"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("value", "expected"), [("49.9", "49.90"), (0, "0.00"), ("1.005", "1.00"), ("2.675", "2.68")]
)
def test_money(value, expected):
    assert money(value) == expected


def test_money_rejects_negative_amounts():
    with pytest.raises(ValueError):
        money("-1")


def test_format_time_is_utc_with_z():
    moment = datetime(2026, 1, 1, 1, 30, tzinfo=UTC).astimezone()
    assert format_time(moment) == "2026-01-01T01:30:00Z"


def test_registry():
    assert set(DATASETS) == {"shoppers", "telco", "kkbox", "cdnow", "jsonl"}
    with pytest.raises(DatasetError, match="choose one of"):
        get("nope")
    with pytest.raises(DatasetError, match="not bundled"):
        get("cdnow").events()
    for name in ("shoppers", "telco"):
        assert get(name).bundled_path is not None and get(name).bundled_path.is_file()
