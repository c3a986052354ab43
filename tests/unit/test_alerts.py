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
