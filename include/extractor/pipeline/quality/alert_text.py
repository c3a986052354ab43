"""What an alert says: the run, what failed or why quality is off, and where to look.

Builders return ``(message, details)``: ``message`` is the text people read (its first
line is the e-mail subject / Slack headline, the following lines the body), ``details``
the same facts as JSON for the ``alerts`` table and machine consumers. Every builder
names the DAG run and links it in the Airflow UI; a failure alert names each failed task
with its map index and try number, the exception type and first line, and its log link;
a quality alert carries the numbers behind the verdict (quarantine counts per stage and
reason, thresholds crossed, fill rates that dropped, trend drifts).

Nothing here redacts: ``alerts.send_alert`` redacts every message and detail it sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

MAX_TASKS_LISTED = 20


@dataclass(frozen=True)
class RunLink:
    dag_id: str
    run_id: str
    ui_base_url: str  # Airflow's [api] base_url

    @property
    def url(self) -> str:
        return f"{self.ui_base_url.rstrip('/')}/dags/{quote(self.dag_id)}/runs/{quote(self.run_id)}"

    @property
    def name(self) -> str:
        return f"{self.dag_id} run {self.run_id}"


@dataclass(frozen=True)
class FailedTask:
    task_id: str
    map_index: int          # -1 when the task is not mapped
    try_number: int
    max_tries: int | None   # tries allowed (retries + 1), when known
    exception_type: str | None
    exception_line: str | None  # first line of the exception message
    log_url: str | None

    @classmethod
    def from_exception(cls, *, task_id: str, map_index: int | None, try_number: int | None,
                       max_tries: int | None, exception: BaseException | str | None,
                       log_url: str | None) -> FailedTask:
        if isinstance(exception, BaseException):
            kind, text = type(exception).__name__, str(exception)
        else:
            kind, text = None, exception
        first = next((line.strip() for line in (text or "").splitlines() if line.strip()), None)
        return cls(task_id, -1 if map_index is None else int(map_index), int(try_number or 0),
                   max_tries, kind, first[:500] if first else None, log_url)

    @property
    def label(self) -> str:
        where = self.task_id + (f"[{self.map_index}]" if self.map_index >= 0 else "")
        tries = f"try {self.try_number}" + (f" of {self.max_tries}" if self.max_tries else "")
        return f"{where} ({tries})"

    @property
    def error(self) -> str:
        if self.exception_type and self.exception_line:
            return f"{self.exception_type}: {self.exception_line}"
        return self.exception_type or self.exception_line or "error not recorded (see its log)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_failure_alert(run: RunLink, task: FailedTask) -> tuple[str, dict[str, Any]]:
    """One task failed for good (its last try): what, why, and where its log is."""
    lines = [f"{run.name}: task {task.label} failed: {task.error}",
             f"  log: {task.log_url or 'unknown'}", f"  run: {run.url}"]
    details = {"kind": "task_failure", "dag_id": run.dag_id, "run_id": run.run_id,
               "run_url": run.url, "failed_tasks": [task.to_dict()]}
    return "\n".join(lines), details


def run_failure_alert(run: RunLink, reason: str | None, failed: Sequence[FailedTask],
                      notes: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
    """The run failed: each failed task with its error and log link."""
    count = f"{len(failed)} failed task{'s' if len(failed) != 1 else ''}"
    lines = [f"{run.name} failed ({reason or 'a task failed'}): {count}"]
    for task in failed[:MAX_TASKS_LISTED]:
        lines += [f"  - {task.label}: {task.error}", f"    log: {task.log_url or 'unknown'}"]
    if len(failed) > MAX_TASKS_LISTED:
        lines.append(f"  ... and {len(failed) - MAX_TASKS_LISTED} more")
    lines += [f"  note: {n}" for n in notes]
    lines.append(f"  run: {run.url}")
    details = {"kind": "run_failure", "dag_id": run.dag_id, "run_id": run.run_id, "run_url": run.url,
               "reason": reason, "failed_tasks": [t.to_dict() for t in failed], "notes": list(notes)}
    return "\n".join(lines), details


def thresholds_crossed(stats: Mapping[str, Any], thresholds: Mapping[str, Any]) -> list[str]:
    """The absolute limits this run's figures are beyond."""
    rate, rows = stats.get("quarantine_rate"), stats.get("rows")
    out = []
    for level in ("fail", "alert"):
        limit = thresholds.get(f"max_quarantine_rate_{level}")
        if rate is not None and limit is not None and rate > float(limit):
            out.append(f"quarantine rate {rate:.1%} > max_quarantine_rate_{level} {float(limit):.1%}")
    min_rows = thresholds.get("min_rows") or 0
    if rows is not None and rows < int(min_rows):
        out.append(f"{rows} rows < min_rows {min_rows}")
    return out


def _count_lines(summary: Mapping[str, Any]) -> list[str]:
    counts = summary.get("counts") or {}
    by_stage = summary.get("quarantine_reasons") or {}
    stages = ", ".join(f"{stage} {sum(r.values())}" for stage, r in by_stage.items()) or "none"
    lines = [f"  receipts: {counts.get('discovered', counts.get('results'))} new, "
             f"{counts.get('valid', 0)} valid, {counts.get('quarantined', 0)} quarantined "
             f"(by stage: {stages})"]
    for stage, reasons in by_stage.items():
        for reason, n in list(reasons.items())[:8]:
            lines.append(f"    {stage}: {reason} x{n}")
    return lines


def quality_alert(run: RunLink, *, decision: str, reason: str, summary: Mapping[str, Any],
                  stats: Mapping[str, Any], thresholds: Mapping[str, Any],
                  trend: Mapping[str, Any] | None, extractor_version: str, partition: str,
                  data_docs: str | None) -> tuple[str, dict[str, Any]]:
    """A validation decision of ``alert`` / ``fail``, with the numbers behind it."""
    crossed = thresholds_crossed(stats, thresholds)
    trend = dict(trend or {})
    lines = [f"{run.name}: validation decision {decision!r}: {reason}",
             f"  partition {partition}, extractor {extractor_version}"]
    lines += _count_lines(summary)
    if crossed:
        lines.append("  thresholds crossed: " + "; ".join(crossed))
    for drift in trend.get("drifts", []):
        lines.append(f"  trend: {drift['text']}")
    dropped = trend.get("dropped_fill_rates") or {}
    if dropped:
        lines.append("  fill rates that dropped (vs trailing mean): " + ", ".join(
            f"{k} {v['baseline']:.0%} -> {v['current']:.0%}" for k, v in dropped.items()))
    if trend.get("note"):
        lines.append(f"  trend check: {trend['note']}")
    if data_docs:
        lines.append(f"  data docs: {data_docs}")
    lines.append(f"  run: {run.url}")
    details = {"kind": "quality", "dag_id": run.dag_id, "run_id": run.run_id, "run_url": run.url,
               "decision": decision, "reason": reason, "partition": partition,
               "extractor_version": extractor_version, "counts": summary.get("counts"),
               "quarantine_reasons": summary.get("quarantine_reasons"),
               "top_quarantine_reasons": summary.get("top_quarantine_reasons"),
               "quarantine_rate": stats.get("quarantine_rate"), "thresholds_crossed": crossed,
               "fill_rates": summary.get("fill_rates"), "trend": trend, "data_docs": data_docs}
    return "\n".join(lines), details


def _utc_text(value: Any) -> str | None:
    """A datetime (or the ISO text Airflow's API renders) as ``2031-05-02T06:00:00Z``."""
    if value is None:
        return None
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text.replace("+00:00", "Z")


def deadline_alert(run: RunLink, *, deadline_time: Any, data_interval_end: Any,
                   state: str | None, allowed: str | None) -> tuple[str, dict[str, Any]]:
    """A scheduled run that had not finished by its deadline (interval end + allowance)."""
    deadline_time, data_interval_end = _utc_text(deadline_time), _utc_text(data_interval_end)
    lines = [f"{run.name} missed its deadline: not finished by {deadline_time} "
             f"({allowed or 'the allowance'} after its data interval ended at {data_interval_end}); "
             f"state {state or 'unknown'}",
             "  the day's receipts are not (all) in the warehouse yet: check the run's running or "
             "queued tasks (a hung extract, no free GPU slot, a paused DAG)",
             f"  run: {run.url}"]
    details = {"kind": "deadline", "dag_id": run.dag_id, "run_id": run.run_id, "run_url": run.url,
               "deadline_time": deadline_time, "data_interval_end": data_interval_end,
               "state": state, "allowed": allowed}
    return "\n".join(lines), details
