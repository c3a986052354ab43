"""Alerts: always a log line and an ``alerts`` row; then every configured notifier.

A notifier is any callable ``(message, details) -> None`` (the DAG builds SMTP and
Slack notifiers from Airflow connections). Notifiers are independent: one that raises
is logged and its error recorded in the alert row's ``notified`` column, and the
others still run. The alert row is written after the notifiers so it records what
was delivered; if the warehouse itself is down, that error propagates (the run must
fail loudly rather than lose the alert silently).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping

log = logging.getLogger(__name__)

Notifier = Callable[[str, dict], None]
LEVELS = ("info", "warning", "error")
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def notifier_name(notifier: Notifier) -> str:
    return getattr(notifier, "name", None) or getattr(notifier, "__name__", None) \
        or type(notifier).__name__


def send_alert(warehouse: Any, *, run_id: str | None, level: str, message: str,
               details: Mapping[str, Any] | None = None,
               notifiers: Iterable[Notifier] = ()) -> None:
    """Log, notify, and record one alert. ``level`` is info / warning / error."""
    if level not in LEVELS:
        raise ValueError(f"alert level must be one of {LEVELS}, not {level!r}")
    details = dict(details or {})
    log.log(_LOG_LEVEL[level], "ALERT [%s] run_id=%s: %s", level, run_id, message)

    outcome: dict[str, str] = {}
    for notifier in notifiers:
        name = notifier_name(notifier)
        if name in outcome:  # two notifiers of the same kind: keep both outcomes
            name = f"{name}#{len(outcome)}"
        try:
            notifier(message, details)
        except Exception as exc:  # one broken channel must not silence the others
            log.exception("alert notifier %s failed", name)
            outcome[name] = f"error: {type(exc).__name__}: {exc}"
        else:
            outcome[name] = "ok"
    warehouse.record_alert(run_id, level, message, details, notified=outcome)
