"""Trend alerts: a run against the mean of its trailing runs (plain Python, and the query on a
real DuckDB warehouse)."""

import datetime as dt
import json

import pytest

from extractor.errors import ConfigError
from extractor.pipeline.quality.trends import RunFigures, TrendTolerances, compare, escalate, judge

T = TrendTolerances(min_receipts=1, min_runs=3, window=7)


def figures(run_id, *, rate=0.0, fill=None, conf=None, speed=1.0, receipts=20):
    return RunFigures(run_id, receipts, rate, dict(fill or {"total": 1.0, "phone": 0.9}),
                      dict(conf or {"total": 0.95}), speed)


def test_steady_runs_do_not_drift():
    report = compare(figures("now"), [figures(f"r{i}") for i in range(5)], T)
    assert report.judged and report.drifts == () and report.dropped_fill_rates == {}


def test_each_figure_beyond_its_tolerance_is_a_drift():
    history = [figures(f"r{i}") for i in range(4)]
    now = figures("now", rate=0.15, fill={"total": 1.0, "phone": 0.7}, conf={"total": 0.80}, speed=0.4)
    report = compare(now, history, T)
    assert [(d.metric, d.field) for d in report.drifts] == [
        ("quarantine_rate", None), ("fill_rate", "phone"), ("confidence", "total"), ("receipts_per_s", None)]
    assert report.drifts[1].describe() == "fill rate of phone 70% vs 90% trailing mean (drop 20 pts > 15 pts)"
    assert report.drifts[3].describe() == "receipts per s 0.4 vs 1 trailing mean (-60% > -50%)"
    assert report.dropped_fill_rates == {"phone": (0.9, 0.7)}


def test_within_tolerance_or_switched_off_is_no_drift():
    history = [figures(f"r{i}") for i in range(4)]
    assert compare(figures("now", fill={"total": 1.0, "phone": 0.8}), history, T).drifts == ()
    off = TrendTolerances(min_receipts=1, fill_rate_drop=None, throughput_drop=None)
    assert compare(figures("now", fill={"total": 0.0, "phone": 0.0}, speed=0.01), history, off).drifts == ()


def test_too_little_history_or_too_small_a_run_is_not_judged():
    report = compare(figures("now", fill={"phone": 0.0}), [figures("a"), figures("b")], T)
    assert not report.judged and report.note == "2 trailing runs < min_runs 3: not judged"
    small = TrendTolerances(min_receipts=10)
    history = [figures(f"r{i}") for i in range(3)] + [figures("tiny", receipts=2)]
    report = compare(figures("now", receipts=5), history, small)
    assert not report.judged and "5 receipts < min_receipts 10" in report.note
    assert compare(figures("now"), history, small).trailing_runs == ("r0", "r1", "r2")


def test_escalate_turns_pass_into_alert_only():
    drifting = compare(figures("now", fill={"total": 1.0, "phone": 0.2}),
                       [figures(f"r{i}") for i in range(3)], T)
    assert escalate("pass", "within limits", drifting)[0] == "alert"
    assert escalate("pass", "within limits", drifting)[1].startswith("trend: fill rate of phone 20%")
    assert escalate("fail", "rate 60%", drifting)[0] == "fail"
    assert escalate("pass", "ok", compare(figures("now"), [], T)) == ("pass", "ok")


def test_tolerances_from_config():
    t = TrendTolerances.from_dict({"window": "5", "fill_rate_drop": 0.3, "throughput_drop": None})
    assert (t.window, t.fill_rate_drop, t.throughput_drop) == (5, 0.3, None)
    with pytest.raises(ConfigError, match="unknown trend tolerances"):
        TrendTolerances.from_dict({"fill_drop": 0.3})
    with pytest.raises(ConfigError, match="min_runs <= window"):
        TrendTolerances.from_dict({"window": 2, "min_runs": 3})


def test_judge_reads_earlier_partitions_of_the_same_version(tmp_path):
    from extractor.pipeline.records import RunRecord
    from extractor.pipeline.warehouse import open_warehouse

    def run(i, version="v1", fill=0.9, decision="pass"):
        start = dt.datetime(2026, 3, 1) + dt.timedelta(days=i)
        summary = {"counts": {"results": 20}, "quarantine_rate": 0.0,
                   "fill_rates": {"phone": fill}, "throughput": {}}
        return RunRecord(run_id=f"run{i}-{version}", dag_id="d", logical_date=start, partition_start=start,
                         partition_end=start + dt.timedelta(days=1), extractor_version=version, model_id=None,
                         revision=None, prompt_version=None, started_at=start, decision=decision,
                         summary=summary)

    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as w:
        w.ensure_schema()
        for r in [run(0), run(1), run(2, fill=0.0, decision="fail"), run(3), run(4, "v2", 0.0), run(6)]:
            w.load([], [], r)
        now = {"counts": {"results": 20}, "quarantine_rate": 0.0, "fill_rates": {"phone": 0.5}}
        report = judge(w.fetch, now, run_id="run5-v1", extractor_version="v1",
                       partition_start=dt.datetime(2026, 3, 6), tolerances=T)
    # run6 is a later day, run2 failed, run4 is another version
    assert report.trailing_runs == ("run3-v1", "run1-v1", "run0-v1")
    assert [d.describe() for d in report.drifts] == [
        "fill rate of phone 50% vs 90% trailing mean (drop 40 pts > 15 pts)"]
    json.dumps(report.to_dict())
