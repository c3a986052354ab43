"""Trend alerts: compare a run with the trailing runs of the same extractor version.

The absolute thresholds (``expectations.Thresholds``) catch a run that is bad on its own;
a new store layout or a silent model change shows first as *drift*: a field that used to
be filled 95 % of the time and now is filled 60 %, confidence sliding, more receipts
quarantined than usual, extraction getting slower. ``judge`` reads the trailing runs of
the same extractor version from the ``runs`` table (their stored summaries), compares
this run's figures with their mean, and reports every drift beyond its tolerance;
``escalate`` turns a passing decision into ``alert`` when there is one.

Figures compared (all from ``summary.summarize_run``): quarantine rate (rise, absolute),
per-field fill rate (drop, absolute), mean per-field confidence where the backend gives
one (drop, absolute), extraction receipts/s (drop, relative). Trailing runs are those of
earlier partitions (so re-running a day compares it with the same history), without
``fail`` runs, and only runs with at least ``min_receipts`` receipts count on either side
(a day with three receipts says little about a fill rate).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extractor.errors import ConfigError

Fetch = Callable[[str, Sequence[Any]], list[tuple]]


@dataclass(frozen=True)
class TrendTolerances:
    """How far a run may drift from its trailing runs before it raises ``alert``
    (``None`` switches a comparison off)."""

    window: int = 7                              # trailing runs compared against
    min_runs: int = 3                            # fewer trailing runs: no judgement yet
    min_receipts: int = 10                       # smaller runs are neither judged nor used
    quarantine_rate_rise: float | None = 0.10    # absolute, 0.10 = 10 points above the mean
    fill_rate_drop: float | None = 0.15          # absolute, per field
    confidence_drop: float | None = 0.10         # absolute, per field
    throughput_drop: float | None = 0.50         # relative: below half the mean receipts/s

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TrendTolerances:
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(values) - names:
            raise ConfigError(f"unknown trend tolerances: {sorted(unknown)}; known: {sorted(names)}")
        try:
            kwargs = {k: (None if v is None else int(v) if k in ("window", "min_runs", "min_receipts")
                          else float(v)) for k, v in values.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"trend tolerances must be numbers (or null): {exc}") from exc
        t = cls(**kwargs)
        if t.window < 1 or not 1 <= t.min_runs <= t.window or t.min_receipts < 1:
            raise ConfigError("trend tolerances need window >= 1, 1 <= min_runs <= window, min_receipts >= 1")
        return t

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunFigures:
    """The figures of one run that trends are judged on."""

    run_id: str
    receipts: int
    quarantine_rate: float | None
    fill_rates: dict[str, float] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    receipts_per_s: float | None = None

    @classmethod
    def from_summary(cls, run_id: str, summary: Mapping[str, Any]) -> RunFigures:
        counts = summary.get("counts") or {}
        return cls(run_id=run_id, receipts=int(counts.get("results") or 0),
                   quarantine_rate=summary.get("quarantine_rate"),
                   fill_rates=dict(summary.get("fill_rates") or {}),
                   confidence=dict(summary.get("mean_confidence") or {}),
                   receipts_per_s=(summary.get("throughput") or {}).get("extract_receipts_per_s"))


@dataclass(frozen=True)
class Drift:
    """One figure beyond its tolerance."""

    metric: str               # quarantine_rate / fill_rate / confidence / receipts_per_s
    field: str | None         # the receipt field, for per-field metrics
    current: float
    baseline: float           # mean over the trailing runs
    tolerance: float

    def describe(self) -> str:
        name = self.metric.replace("_", " ") + (f" of {self.field}" if self.field else "")
        if self.metric == "receipts_per_s":
            return (f"{name} {self.current:.3g} vs {self.baseline:.3g} trailing mean "
                    f"(-{1 - self.current / self.baseline:.0%} > -{self.tolerance:.0%})")
        change = self.current - self.baseline
        word = "rise" if change > 0 else "drop"
        return (f"{name} {self.current:.0%} vs {self.baseline:.0%} trailing mean "
                f"({word} {abs(change) * 100:.0f} pts > {self.tolerance * 100:.0f} pts)")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "text": self.describe()}


@dataclass(frozen=True)
class TrendReport:
    judged: bool
    note: str                              # why not judged, or what it was compared with
    trailing_runs: tuple[str, ...] = ()
    drifts: tuple[Drift, ...] = ()
    dropped_fill_rates: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"judged": self.judged, "note": self.note, "trailing_runs": list(self.trailing_runs),
                "drifts": [d.to_dict() for d in self.drifts],
                "dropped_fill_rates": {k: {"baseline": b, "current": c}
                                       for k, (b, c) in self.dropped_fill_rates.items()}}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _per_field(metric: str, current: Mapping[str, float], history: Sequence[Mapping[str, float]],
               tolerance: float | None) -> list[Drift]:
    if tolerance is None:
        return []
    drifts = []
    for name in sorted(current):
        past = [h[name] for h in history if name in h]
        if past and _mean(past) - current[name] > tolerance:
            drifts.append(Drift(metric, name, current[name], round(_mean(past), 4), tolerance))
    return drifts


def compare(current: RunFigures, history: Sequence[RunFigures], t: TrendTolerances) -> TrendReport:
    """Drifts of ``current`` from the mean of ``history`` (the trailing runs, newest first)."""
    history = [h for h in history if h.receipts >= t.min_receipts][:t.window]
    ids = tuple(h.run_id for h in history)
    if current.receipts < t.min_receipts:
        return TrendReport(False, f"{current.receipts} receipts < min_receipts {t.min_receipts}: "
                                  "not judged", ids)
    if len(history) < t.min_runs:
        return TrendReport(False, f"{len(history)} trailing runs < min_runs {t.min_runs}: not judged", ids)
    drifts: list[Drift] = []
    rates = [h.quarantine_rate for h in history if h.quarantine_rate is not None]
    if t.quarantine_rate_rise is not None and rates and current.quarantine_rate is not None \
            and current.quarantine_rate - _mean(rates) > t.quarantine_rate_rise:
        drifts.append(Drift("quarantine_rate", None, current.quarantine_rate, round(_mean(rates), 4),
                            t.quarantine_rate_rise))
    drifts += _per_field("fill_rate", current.fill_rates, [h.fill_rates for h in history], t.fill_rate_drop)
    drifts += _per_field("confidence", current.confidence, [h.confidence for h in history], t.confidence_drop)
    speeds = [h.receipts_per_s for h in history if h.receipts_per_s]
    if t.throughput_drop is not None and speeds and current.receipts_per_s is not None \
            and current.receipts_per_s < (1 - t.throughput_drop) * _mean(speeds):
        drifts.append(Drift("receipts_per_s", None, current.receipts_per_s, round(_mean(speeds), 4),
                            t.throughput_drop))
    dropped = {}
    for name, value in current.fill_rates.items():
        past = [h.fill_rates[name] for h in history if name in h.fill_rates]
        if past and _mean(past) - value >= 0.01:
            dropped[name] = (round(_mean(past), 4), value)
    dropped = dict(sorted(dropped.items(), key=lambda kv: kv[1][1] - kv[1][0])[:10])
    return TrendReport(True, f"compared with the mean of {len(history)} trailing runs", ids,
                       tuple(drifts), dropped)


TRAILING_RUNS_SQL = """SELECT "run_id", "summary" FROM "runs"
    WHERE "extractor_version" = ? AND "run_id" <> ? AND "decision" IS DISTINCT FROM 'fail'
      AND "partition_start" < ?
    ORDER BY "partition_start" DESC, "started_at" DESC LIMIT ?"""


def trailing_runs(fetch: Fetch, *, extractor_version: str, run_id: str, partition_start: Any,
                  limit: int) -> list[RunFigures]:
    """Figures of the runs of earlier partitions of the same extractor version, newest first.
    ``partition_start`` is a naive-UTC datetime as the warehouse stores it."""
    rows = fetch(TRAILING_RUNS_SQL, (extractor_version, run_id, partition_start, limit))
    out = []
    for rid, summary in rows:
        parsed = json.loads(summary) if isinstance(summary, str) else (summary or {})
        out.append(RunFigures.from_summary(rid, parsed))
    return out


def judge(fetch: Fetch, summary: Mapping[str, Any], *, run_id: str, extractor_version: str,
          partition_start: Any, tolerances: TrendTolerances) -> TrendReport:
    """This run (its summary) against its trailing runs in the warehouse."""
    # over-fetch: small runs are dropped by compare() and must not shrink the window
    history = trailing_runs(fetch, extractor_version=extractor_version, run_id=run_id,
                            partition_start=partition_start, limit=tolerances.window * 4)
    return compare(RunFigures.from_summary(run_id, summary), history, tolerances)


def escalate(decision: str, reason: str, report: TrendReport) -> tuple[str, str]:
    """A passing run with drifts becomes ``alert``; ``alert`` / ``fail`` stay as they are."""
    if not report.drifts:
        return decision, reason
    trend = "trend: " + "; ".join(d.describe() for d in report.drifts)
    if decision == "pass":
        return "alert", trend
    return decision, f"{reason}; {trend}"
