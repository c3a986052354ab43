"""Quality over time, read from the warehouse: what the quality report plots.

``load_history`` reads the ``runs``, ``quarantine`` and ``receipts`` tables of a window of
days and aggregates them per (day, extractor version): receipts processed, quarantine
counts per reason, field fill rates, receipts/s, and the per-field confidences of the
loaded receipts. Plain data, no plotting: ``quality.report`` draws it.

A day is a run's partition (its data interval start, UTC). Reasons are those of the rows
now in ``quarantine``: an extraction failure counts under the first phrase of its reason
("bad image", "model output is not JSON"), a receipt that failed expectations once under
each expectation it failed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[dt.date, str]  # (partition day, extractor version)


@dataclass
class DayVersion:
    """Aggregates of the runs of one extractor version on one partition day."""

    runs: int = 0
    receipts: int = 0          # results the runs processed (loaded + quarantined)
    loaded: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)       # "stage: reason" -> receipts
    fill_weighted: dict[str, float] = field(default_factory=dict)  # field -> sum(rate * ok)
    extracted_ok: int = 0
    receipts_per_s: list[float] = field(default_factory=list)

    @property
    def fill_rates(self) -> dict[str, float]:
        return {k: v / self.extracted_ok for k, v in self.fill_weighted.items()} if self.extracted_ok else {}


@dataclass
class History:
    start: dt.date
    end: dt.date
    cells: dict[Key, DayVersion]
    confidences: dict[str, list[float]]  # version -> every per-field confidence of loaded receipts
    first_day: dict[str, dt.date]         # version -> first day it ran in the window

    @property
    def versions(self) -> list[str]:
        return sorted(self.first_day, key=lambda v: (self.first_day[v], v))

    @property
    def days(self) -> list[dt.date]:
        return sorted({day for day, _ in self.cells})

    def series(self, version: str) -> list[tuple[dt.date, DayVersion]]:
        return sorted((day, cell) for (day, v), cell in self.cells.items() if v == version)


def _json(value: Any) -> Any:
    """JSON columns come back as text from DuckDB and as objects from PostgreSQL."""
    if isinstance(value, (str, bytes)):
        return json.loads(value)
    return value


def _day(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10]) if value else None


def reason_category(stage: str, reason: str, failed_expectations: Iterable[str]) -> list[str]:
    """The reason(s) a quarantined receipt counts under in the report."""
    labels = list(failed_expectations or [])
    if stage == "validate" and labels:
        return [f"validate: {label}" for label in labels]
    return [f"{stage}: {reason.split(':', 1)[0].strip()[:60]}"]


def load_history(warehouse: Any, *, days: int, end: dt.date) -> History:
    """Aggregate the runs whose partition falls in the ``days`` days ending at ``end``."""
    start = end - dt.timedelta(days=days - 1)
    run_day = _runs(warehouse, start, end)
    cells: dict[Key, DayVersion] = defaultdict(DayVersion)
    for day, version, counts, summary in run_day.values():
        _add_run(cells[(day, version)], counts, summary)
    for run_id, stage, reason, failed in _rows_of_runs(
            warehouse, 'SELECT "run_id", "stage", "reason", "failed_expectations" FROM "quarantine"',
            run_day):
        day, version = run_day[run_id][:2]
        cells[(day, version)].reasons.update(reason_category(stage, reason, _json(failed) or []))
    first_day: dict[str, dt.date] = {}
    for day, version in sorted(cells):
        first_day.setdefault(version, day)
    return History(start=start, end=end, cells=dict(cells),
                   confidences=_confidences(warehouse, set(run_day)), first_day=first_day)


def latest_day(warehouse: Any) -> dt.date | None:
    """The newest partition day in ``runs`` (None for an empty warehouse)."""
    [(when,)] = warehouse.fetch(
        'SELECT MAX(COALESCE("partition_start", "logical_date", "started_at")) FROM "runs"')
    return _day(when)


def _runs(warehouse: Any, start: dt.date, end: dt.date) -> dict[str, tuple]:
    rows = warehouse.fetch(
        'SELECT "run_id", COALESCE("partition_start", "logical_date", "started_at"), '
        '"extractor_version", "counts", "summary" FROM "runs"')
    out = {}
    for run_id, when, version, counts, summary in rows:
        day = _day(when)
        if day is not None and start <= day <= end:
            out[run_id] = (day, version, _json(counts) or {}, _json(summary) or {})
    return out


def _add_run(cell: DayVersion, counts: dict[str, Any], summary: dict[str, Any]) -> None:
    cell.runs += 1
    cell.receipts += int(counts.get("results", counts.get("discovered", 0)) or 0)
    cell.loaded += int(counts.get("valid", 0) or 0)
    cell.quarantined += int(counts.get("quarantined", 0) or 0)
    ok = int(counts.get("extracted_ok", 0) or 0)
    for name, rate in (summary.get("fill_rates") or {}).items():
        cell.fill_weighted[name] = cell.fill_weighted.get(name, 0.0) + float(rate) * ok
    cell.extracted_ok += ok
    throughput = summary.get("throughput") or {}
    speed = throughput.get("extract_receipts_per_s") or throughput.get("receipts_per_s")
    if speed:
        cell.receipts_per_s.append(float(speed))


def _confidences(warehouse: Any, run_ids: set[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for _run_id, version, confidence in _rows_of_runs(
            warehouse, 'SELECT "run_id", "extractor_version", "confidence" FROM "receipts"', run_ids):
        out[version].extend(float(v) for v in (_json(confidence) or {}).values())
    return dict(out)


def _rows_of_runs(warehouse: Any, select: str, run_ids: Iterable[str], chunk: int = 500) -> list[tuple]:
    """The rows a window's runs wrote (run_id is the first column), never the whole table."""
    ids, rows = sorted(run_ids), []
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        rows += warehouse.fetch(f'{select} WHERE "run_id" IN ({", ".join("?" * len(part))})', part)
    return rows
