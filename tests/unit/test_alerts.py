"""send_alert: a log line, an alerts row, and every notifier, a broken one included."""

import json
import logging

import pytest

from extractor.pipeline.quality.alerts import send_alert
from extractor.pipeline.warehouse import open_warehouse


@pytest.fixture
def wh(tmp_path):
    w = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    w.ensure_schema()
    yield w
    w.close()


def test_alert_is_logged_recorded_and_notified(wh, caplog):
    received = []

    def slack(message, details):
        received.append(("slack", message, details))

    caplog.set_level(logging.WARNING, logger="extractor.pipeline.quality.alerts")
    send_alert(wh, run_id="scheduled__2024-06-30", level="warning",
               message="quarantine rate 31% > 20%", details={"quarantine_rate": 0.31},
               notifiers=[slack])
    assert received == [("slack", "quarantine rate 31% > 20%", {"quarantine_rate": 0.31})]
    assert "ALERT [warning] run_id=scheduled__2024-06-30: quarantine rate 31% > 20%" in caplog.text
    rows = wh.fetch("SELECT run_id, level, message, details, notified FROM alerts")
    assert rows == [("scheduled__2024-06-30", "warning", "quarantine rate 31% > 20%",
                     '{"quarantine_rate": 0.31}', '{"slack": "ok"}')]


def test_a_failing_notifier_does_not_stop_the_others(wh, caplog):
    calls = []

    def smtp(message, details):
        raise ConnectionRefusedError("smtp server down")

    class Slack:
        name = "slack_webhook"

        def __call__(self, message, details):
            calls.append(message)

    send_alert(wh, run_id="r", level="error", message="run failed", details={},
               notifiers=[smtp, Slack()])
    assert calls == ["run failed"]
    assert "alert notifier smtp failed" in caplog.text
    [(notified,)] = wh.fetch("SELECT notified FROM alerts")
    assert json.loads(notified) == {"slack_webhook": "ok",
                                    "smtp": "error: ConnectionRefusedError: smtp server down"}


def test_without_notifiers_and_bad_level(wh):
    from pathlib import Path
    send_alert(wh, run_id=None, level="info", message="backfill done",
               details={"days": 3, "docs": Path("/srv/docs")})  # not JSON: written as text
    assert wh.fetch("SELECT level, notified, details FROM alerts") == [
        ("info", "{}", '{"days": 3, "docs": "/srv/docs"}')]
    with pytest.raises(ValueError, match="level"):
        send_alert(wh, run_id="r", level="critical", message="x", details={})


def test_send_alert_redacts_every_channel(wh, caplog):
    received = []
    send_alert(wh, run_id="r", level="error",
               message="open failed: postgresq://u:pw-9876@h/db", details={"error": "token tok-12345 rejected"},
               notifiers=[lambda m, d: received.append((m, d))], secrets=["tok-12345"])
    [(message, details)] = received
    assert message == "open failed: postgresq://u:***@h/db" and details == {"error": "token *** rejected"}
    [(row_message, row_details)] = wh.fetch("SELECT message, details FROM alerts")
    assert "pw-9876" not in caplog.text + row_message + row_details
    assert "tok-12345" not in caplog.text + row_details


def test_alert_texts_name_the_run_the_task_and_the_numbers():
    from extractor.pipeline.quality.alert_text import (
        FailedTask,
        RunLink,
        quality_alert,
        run_failure_alert,
        task_failure_alert,
    )

    run = RunLink("receipts_daily", "scheduled__2026-03-01T00:00:00+00:00", "https://af.example/")
    assert run.url == "https://af.example/dags/receipts_daily/runs/scheduled__2026-03-01T00%3A00%3A00%2B00%3A00"
    task = FailedTask.from_exception(task_id="extract", map_index=3, try_number=3, max_tries=3,
                                     exception=RuntimeError("CUDA out of memory\nTried to allocate"),
                                     log_url="https://af.example/log")
    message, details = task_failure_alert(run, task)
    assert message.splitlines() == [
        "receipts_daily run scheduled__2026-03-01T00:00:00+00:00: task extract[3] (try 3 of 3) failed: "
        "RuntimeError: CUDA out of memory", "  log: https://af.example/log", f"  run: {run.url}"]
    message, details = run_failure_alert(run, "task_failure", [task], notes=["n"])
    assert "  - extract[3] (try 3 of 3): RuntimeError: CUDA out of memory" in message.splitlines()
    assert details["failed_tasks"][0]["map_index"] == 3

    summary = {"counts": {"discovered": 6, "valid": 4, "quarantined": 2},
               "quarantine_reasons": {"extract": {"bad image: truncated": 1},
                                      "validate": {"expect_column_values_to_not_be_null(total)": 1}}}
    trend = {"drifts": [{"text": "fill rate of phone 0% vs 75% trailing mean (drop 75 pts > 40 pts)"}],
             "dropped_fill_rates": {"phone": {"baseline": 0.75, "current": 0.0}}, "note": "compared"}
    message, details = quality_alert(
        run, decision="alert", reason="quarantine rate 33.3% > 20.0%", summary=summary,
        stats={"quarantine_rate": 0.333, "rows": 6}, thresholds={"max_quarantine_rate_alert": 0.2,
                                                                 "max_quarantine_rate_fail": 0.5},
        trend=trend, extractor_version="ocr:v", partition="2026-03-01", data_docs=None)
    lines = message.splitlines()
    assert lines[0] == ("receipts_daily run scheduled__2026-03-01T00:00:00+00:00: validation decision "
                        "'alert': quarantine rate 33.3% > 20.0%")
    assert "  receipts: 6 new, 4 valid, 2 quarantined (by stage: extract 1, validate 1)" in lines
    assert "    extract: bad image: truncated x1" in lines
    assert "  thresholds crossed: quarantine rate 33.3% > max_quarantine_rate_alert 20.0%" in lines
    assert "  trend: fill rate of phone 0% vs 75% trailing mean (drop 75 pts > 40 pts)" in lines
    assert "  fill rates that dropped (vs trailing mean): phone 75% -> 0%" in lines
    assert details["thresholds_crossed"] == ["quarantine rate 33.3% > max_quarantine_rate_alert 20.0%"]
