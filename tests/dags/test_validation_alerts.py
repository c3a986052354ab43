"""A receipt that fails the expectation suite is quarantined with the failed expectations,
and crossing a threshold fires the alert: an ``alerts`` row, a log line and the configured
notifiers (here the test sink, configured by dotted path like any deployment notifier)."""

from __future__ import annotations

import datetime as dt
import json

from receipts_dag_helpers import synthetic_receipt

DAY = dt.date(2026, 3, 1)


def test_a_future_dated_receipt_is_quarantined_and_alerts(pipeline):
    pipeline.put(DAY, "ok.jpg", synthetic_receipt(1, date="2026-02-27"))
    pipeline.put(DAY, "future.jpg", synthetic_receipt(3, date="2026-04-20"))

    dag_run = pipeline.run(DAY)

    # 1 of 2 quarantined: above the alert rate (20%), not above the fail rate (50%)
    assert dag_run.state == "success", pipeline.task_states(dag_run)
    (source, stage, failed), = pipeline.fetch("SELECT source, stage, failed_expectations FROM quarantine")
    assert source.endswith("future.jpg") and stage == "validate"
    assert any("date" in name for name in json.loads(failed)), failed
    assert len(pipeline.fetch("SELECT receipt_id FROM receipts")) == 1
    alerts = pipeline.fetch("SELECT run_id, level, message FROM alerts")
    assert [(a[0], a[1]) for a in alerts] == [(dag_run.run_id, "warning")]
    assert len(pipeline.alerts_seen) == 1 and "alert" in pipeline.alerts_seen[0][0]
    assert pipeline.alerts_seen[0][1]["counts"]["quarantined"] == 1
    message = pipeline.alerts_seen[0][0]  # the numbers behind the verdict
    assert "  receipts: 2 new, 1 valid, 1 quarantined (by stage: validate 1)" in message
    assert "thresholds crossed: quarantine rate 50.0% > max_quarantine_rate_alert 20.0%" in message
    # the verdict shows in the grid: the quality gate is skipped, not green; the load stands
    states = pipeline.task_states(dag_run)
    assert states["quality_gate"] == "skipped" and states["report"] == "success"
    # and the mapped extract is labelled by its batch
    from airflow.models.taskinstance import TaskInstance
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as session:
        labels = session.scalars(select(TaskInstance.rendered_map_index).where(
            TaskInstance.run_id == dag_run.run_id, TaskInstance.task_id == "extract")).all()
    assert labels == ["batch 0: 2 receipts"]


def test_a_fail_decision_records_the_rows_then_fails_the_run(pipeline, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_THRESHOLDS", json.dumps({"max_quarantine_rate_fail": 0.3}))
    pipeline.put(DAY, "ok.jpg", synthetic_receipt(1, date="2026-02-27"))
    pipeline.put(DAY, "wrong-total.jpg", synthetic_receipt(4, date="2026-02-20", total="999.99"))

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "failed"
    states = pipeline.task_states(dag_run)
    assert states["validate_and_load"] == "failed" and states["report"] != "success"
    assert states["quality_gate"] == "upstream_failed"
    (source, failed), = pipeline.fetch("SELECT source, failed_expectations FROM quarantine")
    assert source.endswith("wrong-total.jpg") and any("total" in n for n in json.loads(failed))
    assert len(pipeline.fetch("SELECT receipt_id FROM receipts")) == 1
    assert pipeline.fetch("SELECT decision FROM runs") == [("fail",)]
    kinds = sorted((json.loads(d)["kind"], level) for d, level in pipeline.fetch("SELECT details, level FROM alerts"))
    # the validation alert, the failed task's row, and the DAG's on_failure_callback for the run
    assert kinds == [("quality", "error"), ("run_failure", "error"), ("task_failure", "error")]
    # people hear twice: the numbers (quality) and the run failure, which lists the task
    assert len(pipeline.alerts_seen) == 2
    assert "validate_and_load (try 1 of 1): AirflowFailException: validation decision 'fail'" \
        in pipeline.alerts_seen[1][0]
