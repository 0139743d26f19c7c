"""The benchmark's arithmetic and reporting, on synthetic data (no services, no timing)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.cli import build_parser
from bench.dataset import ListDataset
from bench.report import (
    Load,
    ScenarioResult,
    Target,
    build_document,
    format_value,
    render_table,
    run_id,
    summary,
    write_results,
)
from bench.scenarios import SCENARIOS
from bench.scenarios.pipeline import accepted
from bench.stats import LatencySummary, percentile, rate, ratio
from bench.vegeta import Attack, Outcome, parse_results
from bench.vegeta import Target as HttpTarget

# ---------------------------------------------------------------- statistics


def test_percentiles_interpolate_between_closest_ranks_like_numpy() -> None:
    sample = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(sample, 0) == 1.0
    assert percentile(sample, 50) == 2.5
    assert percentile(sample, 100) == 4.0
    assert percentile(sample, 99) == pytest.approx(3.97)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def test_a_percentile_of_nothing_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary_ = LatencySummary.of_seconds([0.001] * 98 + [0.010, 0.100])
    assert summary_.count == 100
    assert summary_.p50_ms == pytest.approx(1.0)
    assert summary_.max_ms == pytest.approx(100.0)
    assert summary_.p99_ms == pytest.approx(10.9)
    assert summary_.mean_ms == pytest.approx((98 * 1 + 10 + 100) / 100)


def test_rates_and_ratios_refuse_a_zero_denominator() -> None:
    assert rate(500, 2.0) == 250.0
    assert ratio(300.0, 600.0) == 0.5
    with pytest.raises(ValueError, match="window"):
        rate(1, 0)
    with pytest.raises(ValueError, match="baseline"):
        ratio(1.0, 0.0)


# ---------------------------------------------------------------- targets and the table


def test_targets_pass_fail_or_say_not_measured() -> None:
    at_least = Target("submit.ratio", ">=", 0.5)
    assert at_least.check(0.5) is True
    assert at_least.check(0.49) is False
    assert at_least.check(None) is None
    assert at_least.check(math.nan) is None
    assert Target("e2e.p99_ms", "<=", 300).check(301) is False
    assert Target("burst.lost", "==", 0).check(0) is True
    with pytest.raises(ValueError, match="operator"):
        Target("x.y", "<", 1)


def test_figures_carry_the_unit_their_key_names() -> None:
    assert format_value("e2e.p99_ms", 12.345) == "12.3 ms"
    assert format_value("relay_drain.events_per_s", 12345.6) == "12,346/s"
    assert format_value("burst.drain_s", 201.2) == "201 s"
    assert format_value("memory.max_rss_mb", 118.4) == "118 MB"
    assert format_value("submit.ratio", 0.4567) == "0.46x"
    assert format_value("burst.lost", 0) == "0"
    assert format_value("burst.drain_s", None) == "n/a"


def _results() -> list[ScenarioResult]:
    submit = ScenarioResult(
        name="submit",
        title="Submit throughput",
        load=Load("max rate, closed loop", "15 s", "64 workers"),
        method="api / raw",
        figures={"api_rps": 400.0, "raw_rps": 1000.0, "ratio": 0.4},
        targets=[Target("submit.ratio", ">=", 0.5)],
    )
    burst = ScenarioResult(
        name="burst",
        title="Burst",
        load=Load("10,000 DAGs", "until drained", "64 workers"),
        method="creations",
        figures={"lost": 0, "duplicates": 0, "p99_ratio": None},
        targets=[
            Target("burst.lost", "==", 0),
            Target("burst.duplicates", "==", 0),
            Target("burst.p99_ratio", "<=", 2),
        ],
        error="TimeoutError: the burst did not drain",
    )
    return [submit, burst]


def test_the_table_lists_targets_first_with_verdicts_and_errors() -> None:
    table = render_table(_results())
    lines = table.splitlines()
    figure_lines = [line for line in lines if "submit." in line]
    assert "submit.ratio" in figure_lines[0]
    assert "FAIL" in figure_lines[0]
    assert ">= 0.5" in figure_lines[0]
    assert "0.40x" in figure_lines[0]
    assert any("burst.p99_ratio" in line and "n/a" in line for line in lines)
    assert any("burst error" in line and "FAIL" in line for line in lines)
    assert len({len(line) for line in lines}) == 1  # a rectangle: columns line up


def test_the_document_has_scenarios_flat_figures_and_verdicts() -> None:
    results = _results()
    document = build_document(
        run={"id": "x"},
        machine={"cores": 2},
        versions={"python": "3.11"},
        stack={},
        results=results,
    )
    assert document["scenarios"]["submit"]["figures"]["ratio"] == 0.4
    assert document["scenarios"]["submit"]["load"]["concurrency"] == "64 workers"
    assert document["scenarios"]["submit"]["method"] == "api / raw"
    assert document["figures"]["submit.raw_rps"] == 1000.0
    assert document["targets"]["submit.ratio"] == {"target": ">= 0.5", "value": 0.4, "pass": False}
    assert document["targets"]["burst.p99_ratio"]["pass"] is None
    assert document["summary"] == summary(results) == {"pass": 2, "fail": 1, "n/a": 1}
    json.dumps(document)  # serialisable as is


def test_results_are_written_as_latest_and_as_a_dated_copy(tmp_path: Path) -> None:
    identifier = run_id(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))
    assert identifier == "2026-03-04T05-06-07"
    paths = write_results({"run": {"id": identifier}}, tmp_path / "results", identifier)
    assert [p.name for p in paths] == ["latest.json", f"{identifier}.json"]
    assert json.loads(paths[0].read_text()) == json.loads(paths[1].read_text())


# ---------------------------------------------------------------- vegeta results


def _line(code: int, sent: str, latency_ms: float, location: str | None = None) -> str:
    headers = {"Location": [location]} if location else {}
    return json.dumps(
        {
            "code": code,
            "timestamp": sent,
            "latency": int(latency_ms * 1e6),
            "error": "" if code else "connection refused",
            "url": "http://127.0.0.1:1/v1/dags",
            "headers": headers,
        }
    )


def test_vegeta_results_become_hits_with_figures() -> None:
    lines = [
        _line(202, "2026-01-01T00:00:00.000000000Z", 10, "/v1/dags/a"),
        _line(202, "2026-01-01T00:00:00.500000000Z", 20, "/v1/dags/b"),
        _line(0, "2026-01-01T00:00:01.000000000Z", 1000),
        # vegeta's marker that a lazily read target list ran out: not a request
        json.dumps(
            {
                "code": 0,
                "timestamp": "2026-01-01T00:00:02Z",
                "latency": 1,
                "error": "no targets to attack",
            }
        ),
    ]
    hits = parse_results("\n".join(lines).encode())
    assert len(hits) == 3
    attack = Attack("t", [HttpTarget("GET", "http://x")], rate=10, duration=1)
    outcome = Outcome(attack=attack, hits=hits, cpu_seconds=0.1)
    assert outcome.errors(202) == 1
    assert outcome.window() == pytest.approx(2.0)  # first send .. last answer
    assert outcome.throughput(202) == pytest.approx(1.0)
    assert outcome.sent_rate() == pytest.approx(2.0)
    assert outcome.latency().max_ms == pytest.approx(1000.0)  # failures are not dropped
    assert outcome.status_counts() == {"0 (connection refused)": 1, "202": 2}
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert accepted(outcome) == {
        "a": pytest.approx(start + 0.010),
        "b": pytest.approx(start + 0.520),
    }


def test_an_attack_states_its_shape() -> None:
    with pytest.raises(ValueError, match="worker"):
        Attack("closed", [HttpTarget("GET", "http://x")], rate=0, duration=1)
    with pytest.raises(ValueError, match="target"):
        Attack("empty", [], rate=10, duration=1)
    line = json.loads(HttpTarget("POST", "http://x", {"A": "b"}, b"{}").encode())
    assert line == {"method": "POST", "url": "http://x", "header": {"A": ["b"]}, "body": "e30="}


# ---------------------------------------------------------------- scenario declarations


@pytest.mark.parametrize("quick", [False, True])
def test_every_scenario_states_its_load_method_and_targets(quick: bool) -> None:
    for name, scenario in SCENARIOS.items():
        load = scenario.load(quick)
        assert load.offered, name
        assert load.duration, name
        assert load.concurrency, name
        assert scenario.method, name
        for target in scenario.targets:
            assert target.key.startswith(f"{name}."), target.key


def test_the_targets_are_the_ones_the_performance_issue_sets() -> None:
    declared = {t.key: t.describe() for s in SCENARIOS.values() for t in s.targets}
    assert declared["submit.ratio"] == ">= 0.5"
    assert declared["submit_latency.p99_ms"] == "<= 25"
    assert declared["relay_drain.events_per_s"] == ">= 10,000"
    assert declared["relay_drain.ratio"] == ">= 0.4"
    assert declared["outbox_lag.p99_ms"] == "<= 100"
    assert declared["e2e.p99_ms"] == "<= 300"
    assert declared["burst.p99_ratio"] == "<= 2"
    assert declared["burst.lost"] == declared["burst.duplicates"] == "== 0"
    assert declared["list.p99_ms"] == "<= 20"
    assert declared["memory.max_rss_mb"] == "<= 150"


def test_the_command_line_selects_scenarios_and_the_quick_mode() -> None:
    args = build_parser().parse_args(["--quick", "--scenario", "e2e", "--scenario", "list"])
    assert args.quick
    assert args.scenario == ["e2e", "list"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--scenario", "nope"])


def test_a_loaded_dataset_serves_any_smaller_one_of_the_same_shape() -> None:
    small = ListDataset(tenants=("a", "b"), per_tenant=10)
    large = ListDataset(tenants=("a", "b"), per_tenant=1000)
    assert small.fingerprint() == large.fingerprint()
    assert small.fingerprint() != ListDataset(tenants=("a",), per_tenant=10).fingerprint()
    assert large.rows == 2000
