"""A notifier for the DAG tests: records what it is called with.

Configured by dotted path (``RECEIPT_ALERT_CALLBACKS=receipts_alert_sink:record_alert``),
the same extension point a deployment uses to add its own notifier. With
``RECEIPT_TEST_ALERT_LOG=<file>`` it also appends each alert to that file as a JSON line
(how the alerts quoted in docs/alerts.md were produced)."""

import json
import os

ALERTS: list[tuple[str, dict]] = []


def record_alert(message: str, details: dict) -> None:
    ALERTS.append((message, details))
    if path := os.environ.get("RECEIPT_TEST_ALERT_LOG"):
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"message": message, "details": details}, default=str) + "\n")
