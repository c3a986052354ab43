"""Alerts: always a log line and an ``alerts`` row; then every configured notifier.

A notifier is any callable ``(message, details) -> None`` (the DAG builds SMTP and
Slack notifiers from Airflow connections). Notifiers are independent: one that raises
is logged and its error recorded in the alert row's ``notified`` column, and the
others still run. The alert row is written after the notifiers so it records what
was delivered; if the warehouse itself is down, that error propagates (the run must
fail loudly rather than lose the alert silently). A caller that cannot open the
warehouse at all passes ``warehouse=None``: the log line and notifiers still go out.

Every message and detail is redacted first (``extractor.redaction``: URL passwords,
``password=`` pairs, and the ``secrets`` the caller knows of, plus the caller's
``redactor``, e.g. Airflow's secrets masker), so no channel ever receives a credential.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from extractor.redaction import redact

log = logging.getLogger(__name__)

Notifier = Callable[[str, dict], None]
LEVELS = ("info", "warning", "error")
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def notifier_name(notifier: Notifier) -> str:
    return getattr(notifier, "name", None) or getattr(notifier, "__name__", None) \
        or type(notifier).__name__


def send_alert(warehouse: Any | None, *, run_id: str | None, level: str, message: str,
               details: Mapping[str, Any] | None = None,
               notifiers: Iterable[Notifier] = (), secrets: Iterable[str] = (),
               redactor: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Log, notify, and record one alert. ``level`` is info / warning / error. Returns the
    alert as sent (redacted message and details, per-notifier outcome)."""
    if level not in LEVELS:
        raise ValueError(f"alert level must be one of {LEVELS}, not {level!r}")
    secrets = tuple(secrets)
    message, details = redact(message, secrets), redact(dict(details or {}), secrets)
    if redactor is not None:
        message, details = redactor(message), redactor(details)
    log.log(_LOG_LEVEL[level], "ALERT [%s] run_id=%s: %s", level, run_id, message)

    outcome: dict[str, str] = {}
    for notifier in notifiers:
        name = notifier_name(notifier)
        if name in outcome:  # two notifiers of the same kind: keep both outcomes
            name = f"{name}#{len(outcome)}"
        try:
            notifier(message, details)
        except Exception as exc:  # one broken channel must not silence the others
            log.error("alert notifier %s failed: %s", name,
                      redact(f"{type(exc).__name__}: {exc}", secrets))
            outcome[name] = redact(f"error: {type(exc).__name__}: {exc}", secrets)
        else:
            outcome[name] = "ok"
    if warehouse is not None:
        warehouse.record_alert(run_id, level, message, details, notified=outcome)
    return {"run_id": run_id, "level": level, "message": message, "details": details,
            "notified": outcome}


def recorded_task_failures(fetch: Callable[[str, tuple], list[tuple]], run_id: str,
                           since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The failed tasks that task-failure alerts of ``run_id`` recorded (``FailedTask``
    fields), latest per (task, map index); ``since`` (the run's start) skips the alerts of
    an earlier attempt of a cleared run."""
    rows = fetch('SELECT "details", "created_at" FROM "alerts" WHERE "run_id" = ? '
                 'ORDER BY "created_at"', (run_id,))
    if since is not None and since.tzinfo is not None:
        since = since.astimezone(dt.UTC).replace(tzinfo=None)
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for details, created_at in rows:
        parsed = json.loads(details) if isinstance(details, str) else (details or {})
        if parsed.get("kind") != "task_failure" or (since is not None and created_at < since):
            continue
        for task in parsed.get("failed_tasks") or []:
            latest[(task["task_id"], task["map_index"])] = task
    return list(latest.values())
