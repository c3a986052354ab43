"""A notifier for the DAG tests: records what it is called with.

Configured by dotted path (``RECEIPT_ALERT_CALLBACKS=receipts_alert_sink:record_alert``),
the same extension point a deployment uses to add its own notifier."""

ALERTS: list[tuple[str, dict]] = []


def record_alert(message: str, details: dict) -> None:
    ALERTS.append((message, details))
