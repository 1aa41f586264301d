"""`stream-kpis compute` end to end on a small file whose KPIs are computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_kpis.cli import main

WORKED_EXAMPLE = Path(__file__).parent / "data" / "worked_example.jsonl"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["compute", *args], env=env)
    return result.exit_code, result.output


def snapshot(*args: str) -> dict:
    code, output = run(str(WORKED_EXAMPLE), *args)
    assert code == 0, output
    return json.loads(output)


def test_worked_example_from_the_spec():
    s = snapshot("--as-of", "2026-01-31T00:00:00Z")
    assert s["as_of"] == "2026-01-31T00:00:00Z"
    w = s["windows"]["30d"]["all"]
    assert w["churn_rate"] == {"value": 0.4, "numerator": 2, "denominator": 5}
    assert w["customer_retention_rate"] == {"value": 0.75, "numerator": 3, "denominator": 4}
    assert w["net_dollar_retention"] == {"value": 0.88, "numerator": 220, "denominator": 250}
    assert w["gross_revenue_retention"] == {"value": 0.68, "numerator": 170, "denominator": 250}
    # NPS on 0-10: 10 promotes, 3 detracts, 7 is passive; the score 11 is invalid
    nps = w["nps"]
    assert (nps["numerator"], nps["denominator"]) == (1 - 1, 3)
    assert nps["value"] == 0.0
    # P = D = 1/3: 100 * 1.96 * sqrt((2/3 - 0) / 3)
    assert abs(nps["margin_of_error"] - 100 * 1.96 * (2 / 9) ** 0.5) < 1e-9


def test_no_data_is_null_never_zero():
    w = snapshot("--as-of", "2026-01-31T00:00:00Z")["windows"]
    assert w["30d"]["all"]["csat"]["value"] is None
    assert w["30d"]["all"]["csat"]["denominator"] == 0
    # retention needs a starting cohort: none in `all`
    assert w["all"]["all"]["customer_retention_rate"]["value"] is None


def test_outcomes_are_counted():
    events = snapshot()["events"]
    # 17 non-blank lines: 14 valid (one of them a duplicate); score 11, amount -5 and the
    # line that is not JSON are invalid
    assert events["accepted"] == 13
    assert events["duplicate"] == 1
    assert events["invalid"] == {
        "invalid_amount": 1,
        "malformed_json": 1,
        "score_out_of_range": 1,
    }


def test_default_as_of_is_the_newest_event():
    assert snapshot()["as_of"] == "2026-01-21T00:00:00Z"


def test_window_option_adds_a_window_and_program_filters():
    s = snapshot("--as-of", "2026-01-31T00:00:00Z", "--window", "q=90d/1d", "--program", "default")
    assert list(s["windows"]) == ["1h", "24h", "7d", "30d", "q", "all"]
    assert list(s["windows"]["q"]) == ["default"]
    # over 90 days every start is in the window: 6 activations (D twice), 2 churned
    assert s["windows"]["q"]["default"]["churn_rate"]["numerator"] == 2


def test_targets_are_judged(tmp_path):
    targets = tmp_path / "targets.toml"
    targets.write_text(
        '[[target]]\nkpi = "churn_rate"\nwindow = "30d"\nop = "<="\nthreshold = 0.5\n'
        '[[target]]\nkpi = "net_dollar_retention"\nwindow = "30d"\nop = ">="\nthreshold = 1\n'
        '[[target]]\nkpi = "csat"\nwindow = "30d"\nop = ">="\nthreshold = 0.8\n'
    )
    s = snapshot("--as-of", "2026-01-31T00:00:00Z", "--targets", str(targets))
    assert [t["status"] for t in s["targets"]] == ["met", "missed", "no_data"]
    assert s["success_rate"]["all"] == {"value": 0.5, "numerator": 1, "denominator": 2}


def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    code, output = run(str(WORKED_EXAMPLE), "--as-of", "yesterday")
    assert code == 2 and "--as-of" in output and "Traceback" not in output
    code, output = run(str(WORKED_EXAMPLE), "--window", "5x")
    assert code == 2 and "5x" in output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    code, output = run(str(empty))
    assert code == 2 and "holds no event" in output


def test_a_file_of_invalid_lines_says_how_many_and_why(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "bogus"}\nnot json\n{"type": "party"}\n')
    code, output = run(str(bad))
    assert code == 2, output
    last = output.strip().splitlines()[-1]
    assert "no valid event, only 3 invalid lines (malformed_json: 1, unknown_type: 2)" in last
    assert "--as-of" in last


def test_without_as_of_a_far_future_line_is_invalid_not_the_clock(tmp_path):
    events = tmp_path / "future.jsonl"
    good = WORKED_EXAMPLE.read_text()
    future = [
        '{"type":"referral","event_id":"f1","customer_id":"c9","occurred_at":"9999-12-31T23:59:59Z"}',
        '{"type":"referral","event_id":"f2","customer_id":"c9","occurred_at":1e20}',
    ]
    events.write_text(good + "\n".join(future) + "\n")
    code, output = run(str(events))
    assert code == 0, output
    snapshot = json.loads(output[output.index("{") :])
    assert snapshot["as_of"] == json.loads(run(str(WORKED_EXAMPLE))[1])["as_of"]
    before = json.loads(run(str(WORKED_EXAMPLE))[1])["events"]["invalid"]
    assert snapshot["events"]["invalid"] == {**before, "timestamp_in_future": 2}


def test_an_indent_out_of_range_is_named(tmp_path):
    for indent in ("-1", "17", "99999999999999999999"):
        code, output = run(str(WORKED_EXAMPLE), "--indent", indent)
        assert code == 2, output
        assert "--indent" in output and indent in output and "Traceback" not in output


def test_a_window_without_a_name_before_equals_is_named():
    code, output = run(str(WORKED_EXAMPLE), "--window", "=1h")
    assert code == 2, output
    assert "Invalid value for '--window': '=1h' has no name before '='" in output


def test_a_window_named_like_a_configured_one_is_named():
    code, output = run(str(WORKED_EXAMPLE), "--window", "1h/1h")
    assert code == 2, output
    assert "--window '1h/1h': '1h' is a window already" in output
    code, output = run(str(WORKED_EXAMPLE), "--window", "q=2h", "--window", "q=3h")
    assert code == 2, output
    assert "'--window': 'q=3h': a window is named 'q' already" in output


def test_an_unknown_program_is_named_with_the_file_s_programmes():
    code, output = run(str(WORKED_EXAMPLE), "--program", "nosuch")
    assert code == 2, output
    last = output.strip().splitlines()[-1]
    assert last == (
        f"Error: --program 'nosuch': no KPIs for that programme in '{WORKED_EXAMPLE}' as of "
        "2026-01-21T00:00:00Z; programmes with KPIs: all, default"
    )
    assert "Traceback" not in output


def test_a_program_is_cut_as_the_http_api_cuts_it(tmp_path):
    targets = tmp_path / "targets.toml"
    targets.write_text(
        '[[target]]\nkpi = "churn_rate"\nwindow = "30d"\nop = "<="\nthreshold = 0.5\n'
        '[[target]]\nprogram = "default"\nkpi = "churn_rate"\nwindow = "30d"\nop = "<="\n'
        "threshold = 0.5\n"
    )
    s = snapshot("--program", "default", "--targets", str(targets))
    assert {name: list(scopes) for name, scopes in s["windows"].items()} == {
        name: ["default"] for name in ("1h", "24h", "7d", "30d", "all")
    }
    assert {t["program"] for t in s["targets"]} == {"default"}
    assert list(s["success_rate"]) == ["default"]


@pytest.mark.parametrize(
    ("as_of", "says"),
    [
        ("99999999999999999999", "out of the years 1-9999 (read as epoch milliseconds)"),
        ("-99999999999999999999", "out of the years 1-9999"),
        ("1e99999999999999999999", "out of the years 1-9999 (read as epoch milliseconds)"),
        ("yesterday", "not a time"),
        ("nan", "not a time"),
        ("1_000", "not a time"),
        ("2026-01-31T00:00:00", "expected Z or a UTC offset"),
        ("2026-02-30T00:00:00Z", "no such date or time"),
    ],
)
def test_every_as_of_error_names_the_flag_the_value_and_the_forms(as_of, says):
    code, output = run(str(WORKED_EXAMPLE), "--as-of", as_of)
    assert code == 2, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"Error: --as-of {as_of!r}: {says}")
    assert last.endswith("; give RFC 3339 with an offset, such as 2026-01-31T00:00:00Z, or epoch "
                         "seconds (milliseconds above 10**11)")  # fmt: skip
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("as_of", "shown"),
    [
        ("-5", "1969-12-31T23:59:55Z"),
        ("100", "1970-01-01T00:01:40Z"),
        ("1e5", "1970-01-02T03:46:40Z"),
        ("200000000000", "1976-05-03T19:33:20Z (read as epoch milliseconds)"),
        ("1999-12-31T23:59:59Z", "1999-12-31T23:59:59Z"),
    ],
)
def test_an_as_of_before_the_contract_s_earliest_time_is_refused(as_of, shown):
    code, output = run(str(WORKED_EXAMPLE), "--as-of", as_of)
    assert code == 2, output
    assert output.strip().splitlines()[-1] == (
        f"Error: --as-of {as_of!r} is {shown}, before 2000-01-01T00:00:00Z, the earliest time "
        "the event contract accepts: no event could count; give a later time"
    )


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
        ("946684800", "2000-01-01T00:00:00Z"),
        ("1.7698176e9", "2026-01-31T00:00:00Z"),
        ("1769817600000", "2026-01-31T00:00:00Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
    ],
)
def test_as_of_from_the_contract_s_earliest_time_to_9999_is_taken(as_of, expected):
    assert snapshot("--as-of", as_of)["as_of"] == expected
