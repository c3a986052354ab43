"""End to end on the embedded default, through real ``dag.test()`` runs: a local
partition folder, the OCR backend on CPU, a DuckDB warehouse, SQLite Airflow metadata."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

from extractor.spec import resolve_spec

DAY = dt.date(2026, 3, 1)
OCR_VERSION = resolve_spec("ocr").version  # the shipped parser version, whatever it is now


def test_two_receipts_land_in_the_warehouse(pipeline):
    pipeline.put_sample(DAY, "X51006466062")
    pipeline.put_sample(DAY, "X51005442341")
    pipeline.put(DAY, ".DS_Store", b"finder junk")  # ignored: not a receipt
    pipeline.put(DAY - dt.timedelta(days=1), "other-day.jpg", b"another partition")
    # staged files of earlier runs: one past the 30-day retention, one within it
    staging = pipeline.root / "staging" / "receipts_daily"
    for name, age_days in (("scheduled__2025-12-01T00_00_00_00_00", 45), ("manual__recent", 2)):
        (staging / name).mkdir(parents=True)
        (staging / name / "batch-00000.jsonl").write_text("{}\n")
        for path in (staging / name / "batch-00000.jsonl", staging / name):
            os.utime(path, (time.time() - age_days * 86400,) * 2)

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "success", pipeline.task_states(dag_run)
    assert pipeline.task_states(dag_run)["prune_staging"] == "success"
    # the old run's folder is pruned; the recent one and this run's own stay
    from extractor.pipeline.tasks import _safe

    assert sorted(p.name for p in staging.iterdir()) == sorted(["manual__recent", _safe(dag_run.run_id)])
    loaded = pipeline.fetch("SELECT receipt_id, extractor_version, source FROM receipts")
    quarantined = pipeline.fetch("SELECT receipt_id, reason FROM quarantine")
    assert len(loaded) + len(quarantined) == 2
    assert {r[1] for r in loaded} <= {OCR_VERSION}
    assert all(f"dt={DAY}" in r[2] for r in loaded)
    runs = pipeline.fetch("SELECT run_id, extractor_version, partition_start, partition_end, "
                          "decision, summary FROM runs")
    assert len(runs) == 1
    run_id, version, start, end, decision, summary = runs[0]
    assert run_id == dag_run.run_id and version == OCR_VERSION
    assert (start.date(), end.date()) == (DAY, DAY + dt.timedelta(days=1))
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert summary["counts"]["discovered"] == 2
    assert summary["discovery"]["listed"] == 2
    assert set(summary["fill_rates"]) >= {"store_name", "date", "total"}
    assert decision in ("pass", "alert")
    # downstream consumers learn the run's extractor version from the Asset event
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = [e for e in session.query(AssetEvent).all() if e.source_run_id == dag_run.run_id]
    assert [e.extra["extractor_version"] for e in events] == [OCR_VERSION]
    # the staged JSONL of the run is on disk (XCom only carried its URI)
    staged = [p for p in staging.rglob("batch-*.jsonl") if p.parent.name != "manual__recent"]
    assert len(staged) == 1 and len(staged[0].read_text().splitlines()) == 2


def test_without_the_variable_the_production_model_is_used_and_fails_loudly_here(pipeline,
                                                                                  monkeypatch):
    """No ``receipt_extractor``: the production default (Llama 3.2 11B Vision) is chosen, not
    a silent CPU fallback; its weights cannot be fetched offline, so the run fails at
    ensure_model, extracts nothing, and the failure alert fires."""
    monkeypatch.delenv("AIRFLOW_VAR_RECEIPT_EXTRACTOR")
    monkeypatch.delenv("RECEIPT_EXTRACTOR", raising=False)
    pipeline.put_sample(DAY, "X51006466062")

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "failed"
    states = pipeline.task_states(dag_run)
    assert states["resolve_extractor"] == "success" and states["ensure_model"] == "failed"
    assert states["validate_and_load"] == "upstream_failed"
    assert pipeline.fetch("SELECT count(*) FROM receipts") == [(0,)]
    # the task's row (not sent), then the run's alert that lists it (sent)
    assert [level for (level,) in pipeline.fetch("SELECT level FROM alerts")] == ["error", "error"]
    assert len(pipeline.alerts_seen) == 1 and "failed" in pipeline.alerts_seen[0][0]
    assert "ensure_model (try 1 of 1)" in pipeline.alerts_seen[0][0]
