"""Alert notifiers for the receipts pipeline, built from Airflow connections when they exist.

Each notifier is a callable ``(message, details) -> None`` as ``extractor.pipeline.quality.alerts.
send_alert`` expects; the log line and the ``alerts`` row are always written by
``send_alert`` itself, these only add people's channels:

* connection ``receipts_smtp`` (type smtp): the smtp provider's ``SmtpNotifier``;
  recipients from the connection extra ``{"to": "a@x, b@y"}`` (or its login as fallback).
* connection ``receipts_slack``: type ``slackwebhook`` uses ``SlackWebhookNotifier``;
  type ``slack`` (a bot token) uses ``SlackNotifier`` to the extra's ``channel``.

Providers are imported only when a connection asks for them, so a DAG file importing this
module stays light.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Notifier = Callable[[str, dict], None]
SMTP_CONN_ID = "receipts_smtp"
SLACK_CONN_ID = "receipts_slack"


def _connection(conn_id: str):
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _extra(conn) -> dict[str, Any]:
    return conn.extra_dejson if conn.extra else {}


def _text(message: str, details: dict) -> str:
    return f"{message}\n\n{json.dumps(details, indent=2, sort_keys=True, default=str)}"


def _subject(message: str) -> str:
    """The alert's first line (it names the run and what happened), cut for a mail subject."""
    first = message.splitlines()[0] if message else "alert"
    return f"[receipts] {first[:180]}"


def smtp_notifier(conn_id: str = SMTP_CONN_ID) -> Notifier | None:
    conn = _connection(conn_id)
    if conn is None:
        return None
    extra = _extra(conn)
    to = extra.get("to") or conn.login
    if not to:
        log.warning("connection %s has no recipients (extra 'to'): no e-mail alerts", conn_id)
        return None

    def notify(message: str, details: dict) -> None:
        from html import escape

        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(to=to, from_email=extra.get("from_email") or "receipts-pipeline@localhost",
                     subject=_subject(message),
                     html_content=f"<pre>{escape(_text(message, details))}</pre>",
                     smtp_conn_id=conn_id).notify({})

    return notify


def slack_notifier(conn_id: str = SLACK_CONN_ID) -> Notifier | None:
    conn = _connection(conn_id)
    if conn is None:
        return None
    if conn.conn_type == "slackwebhook":
        def notify(message: str, details: dict) -> None:
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

            SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text=message).notify({})
        return notify
    channel = _extra(conn).get("channel", "#receipts-alerts")

    def notify_api(message: str, details: dict) -> None:
        from airflow.providers.slack.notifications.slack import SlackNotifier

        SlackNotifier(slack_conn_id=conn_id, channel=channel, text=message).notify({})
    return notify_api


def build_notifiers() -> list[Notifier]:
    """The notifiers whose connections are configured (possibly none)."""
    return [n for n in (smtp_notifier(), slack_notifier()) if n is not None]


def on_run_failure(context: dict) -> None:
    """DAG ``on_failure_callback``: alert row + log + the configured notifiers."""
    from extractor.pipeline import tasks

    tasks.on_run_failure(context, notifiers=build_notifiers())


def on_task_failure(context: dict) -> None:
    """Task ``on_failure_callback`` (all tasks, via ``default_args``): the failed task's
    alert, with its exception and log link."""
    from extractor.pipeline import tasks

    tasks.on_task_failure(context, notifiers=build_notifiers())


def on_deadline_missed(context: dict, **kwargs) -> None:
    """``DeadlineAlert`` callback (run by the executor when a scheduled run has not finished
    in time): the deadline alert."""
    from extractor.pipeline import tasks

    tasks.on_deadline_missed(context, notifiers=build_notifiers())
