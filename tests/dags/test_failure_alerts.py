"""A failing task is reported by name, exception and log link, and a password never travels
(real dag.test runs; task logs, alerts rows, notifier payloads and XComs are all scanned).

Two ways a password sits in the pipeline's reach: the issue's mistyped warehouse URL in
the environment (``postgresq://user:<pw>@...``: the warehouse cannot open, so the alerts
go to the log and the notifiers only), and the ``receipts_warehouse`` connection of a
real PostgreSQL warehouse (the alerts are recorded there, and the run's alert lists the
failed task with the error its own alert recorded)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from pathlib import Path

import pytest
from receipts_dag_helpers import synthetic_receipt

DAY = dt.date(2026, 3, 1)
CANARY = "Canary-pw-7Qx93kLm"
UI = "https://airflow.example.test/"
PG = "postgresql://postgres@127.0.0.1:5432"


def xcom_values(run_id: str) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as session:
        rows = session.execute(select(XComModel.task_id, XComModel.key, XComModel.value)
                               .where(XComModel.run_id == run_id)).all()
    return [json.dumps([t, k, v], default=str) for t, k, v in rows]


def everything_written(pipeline, dag_run, capfd, caplog, warehouse_rows=()) -> str:
    """Task logs (dag.test prints them; files under AIRFLOW_HOME/logs too), the alerts
    table, notifier payloads and XComs of the run, as one text."""
    out, err = capfd.readouterr()
    log_files = [p.read_text(errors="replace") for p in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log")]
    parts = [out, err, caplog.text, *log_files, *xcom_values(dag_run.run_id),
             json.dumps(pipeline.alerts_seen, default=str), json.dumps(list(warehouse_rows), default=str)]
    return "\n".join(parts)


@pytest.fixture
def postgres_db():
    import psycopg

    name = f"receipts_alerts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_mistyped_warehouse_url_alerts_with_the_error_and_never_the_password(
        pipeline, monkeypatch, capfd, caplog):
    monkeypatch.setenv("RECEIPT_WAREHOUSE_URL", f"postgresq://receipts:{CANARY}@127.0.0.1:5432/receipts")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", UI)
    caplog.set_level(logging.INFO)
    pipeline.put(DAY, "ok.jpg", synthetic_receipt(1, date="2026-02-27"))

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "failed"
    assert pipeline.task_states(dag_run)["discover_new_receipts"] == "failed"
    # the warehouse is what broke: the tasks' alerts cannot be recorded, so they go to people
    # (discover_new_receipts, and quality_report, which runs whatever happened upstream)
    *task_alerts, (run_msg, run_details) = pipeline.alerts_seen
    assert [d["failed_tasks"][0]["task_id"] for _, d in task_alerts] == ["discover_new_receipts",
                                                                         "quality_report"]
    task_msg, task_details = task_alerts[0]
    run_path = f"{UI}dags/receipts_daily/runs/{dag_run.run_id.replace(':', '%3A').replace('+', '%2B')}"
    assert task_msg.startswith(f"receipts_daily run {dag_run.run_id}: task discover_new_receipts "
                               "(try 1 of 1) failed: ValueError: unsupported warehouse URL "
                               "'postgresq://receipts:***@127.0.0.1:5432/receipts'")
    assert f"log: {UI}dags/receipts_daily/runs/" in task_msg
    assert "/tasks/discover_new_receipts?try_number=1" in task_msg
    assert f"run: {run_path}" in task_msg
    assert task_details["failed_tasks"][0]["exception_type"] == "ValueError"
    assert "not_recorded" in task_details
    assert run_msg.startswith(f"receipts_daily run {dag_run.run_id} failed (task_failure): 1 failed task")
    assert run_msg.splitlines()[1].startswith("  - ") and "/tasks/" in run_msg  # the last failed task
    text = everything_written(pipeline, dag_run, capfd, caplog)
    assert "unsupported warehouse URL" in text  # the scan reads what was written
    assert CANARY not in text


def test_a_failed_task_is_listed_in_the_run_alert_and_the_connection_password_stays_hidden(
        pipeline, postgres_db, monkeypatch, capfd, caplog):
    monkeypatch.delenv("RECEIPT_WAREHOUSE_URL")
    monkeypatch.setenv("AIRFLOW_CONN_RECEIPTS_WAREHOUSE", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres",
        "password": CANARY, "schema": postgres_db}))  # trust auth: the password is carried, not checked
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", UI)
    caplog.set_level(logging.INFO)
    pipeline.put(DAY, "ok.jpg", synthetic_receipt(1, date="2026-02-27"))
    missing_model = {"backend": "hf", "model_id": "acme/receipts-vlm", "source": "/nonexistent/receipts-vlm"}
    monkeypatch.setenv("RECEIPT_ALLOWED_MODELS", "acme/receipts-vlm")  # the admin lets a run name it

    dag_run = pipeline.run(DAY, conf={"extractor": missing_model})

    assert dag_run.state == "failed" and pipeline.task_states(dag_run)["ensure_model"] == "failed"
    from extractor.pipeline.warehouse import open_warehouse

    with open_warehouse(f"{PG}/{postgres_db}") as warehouse:
        rows = warehouse.fetch("SELECT level, message, details, notified FROM alerts ORDER BY created_at")
    kinds = [json.loads(details)["kind"] for _, _, details, _ in rows]
    assert kinds == ["task_failure", "run_failure"]
    task_row = json.loads(rows[0][2])["failed_tasks"][0]
    assert (task_row["task_id"], task_row["map_index"], task_row["try_number"]) == ("ensure_model", -1, 1)
    assert json.loads(rows[0][3]) == {}  # recorded, not sent: the run's alert tells people
    # one message to people, naming the task, its exception (from its recorded row) and its log
    [(message, details)] = pipeline.alerts_seen
    assert message == rows[1][1]
    lines = message.splitlines()
    assert lines[0] == f"receipts_daily run {dag_run.run_id} failed (task_failure): 1 failed task"
    assert lines[1].startswith(f"  - ensure_model (try 1 of 1): {task_row['exception_type']}: ")
    assert "/nonexistent/receipts-vlm" in lines[1]
    assert lines[2].startswith(f"    log: {UI}dags/receipts_daily/runs/") and lines[2].endswith(
        "/tasks/ensure_model?try_number=1")
    assert lines[-1].startswith(f"  run: {UI}dags/receipts_daily/runs/")
    text = everything_written(pipeline, dag_run, capfd, caplog, rows)
    assert "ensure_model" in text and CANARY not in text
