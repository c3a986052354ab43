"""Five daily runs whose phone fill rate falls (100, 100, 50, 50, 0 %): every run passes the
absolute thresholds, and the trend check against the trailing runs of the same extractor
version raises ``alert`` on the fifth run, not before (real dag.test runs, OCR, DuckDB).

Receipts/s is left out of this test's tolerances: on a shared 2-core CI machine it moves
with the neighbours' load, not with the pipeline."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from receipts_dag_helpers import synthetic_receipt

FIRST_DAY = dt.date(2026, 3, 1)
# (seed, phone printed?) per run: two receipts a day, the phone line disappearing
PLAN = [[(21, True), (22, True)], [(23, True), (24, True)], [(21, True), (25, False)],
        [(22, True), (26, False)], [(27, False), (28, False)]]


@pytest.mark.slow
def test_a_falling_fill_rate_raises_a_trend_alert_on_the_fifth_run(pipeline, monkeypatch):
    monkeypatch.setenv("RECEIPT_TREND_TOLERANCES", json.dumps(
        {"min_receipts": 1, "min_runs": 3, "fill_rate_drop": 0.4, "throughput_drop": None}))
    gates = []
    for i, receipts in enumerate(PLAN):
        day = FIRST_DAY + dt.timedelta(days=i)
        for seed, phone in receipts:  # dated per day: new bytes, so a new receipt each run
            overrides = {} if phone else {"phone": ""}
            pipeline.put(day, f"r{seed}.jpg", synthetic_receipt(seed, date=str(day - dt.timedelta(days=2)),
                                                                **overrides))
        dag_run = pipeline.run(day)
        assert dag_run.state == "success", pipeline.task_states(dag_run)
        gates.append(pipeline.task_states(dag_run)["quality_gate"])

    runs = [(decision, json.loads(summary)) for decision, summary in
            pipeline.fetch("SELECT decision, summary FROM runs ORDER BY partition_start")]
    assert [s["fill_rates"]["phone"] for _, s in runs] == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert [s["quarantine_rate"] for _, s in runs] == [0.0] * 5  # the absolute thresholds pass
    assert [d for d, _ in runs] == ["pass", "pass", "pass", "pass", "alert"]
    assert gates == ["success"] * 4 + ["skipped"]
    trends = [s["trend"] for _, s in runs]
    assert [t["judged"] for t in trends] == [False, False, False, True, True]
    assert trends[3]["drifts"] == [] and trends[3]["dropped_fill_rates"]["phone"]["current"] == 0.5
    assert [d["text"] for d in trends[4]["drifts"]] == [
        "fill rate of phone 0% vs 75% trailing mean (drop 75 pts > 40 pts)"]
    [(level, message)] = pipeline.fetch("SELECT level, message FROM alerts")
    assert level == "warning"
    assert message.splitlines()[0].endswith(
        "validation decision 'alert': trend: "
        "fill rate of phone 0% vs 75% trailing mean (drop 75 pts > 40 pts)")
    assert "  fill rates that dropped (vs trailing mean): phone 75% -> 0%" in message
    assert [m for m, _ in pipeline.alerts_seen] == [message]
