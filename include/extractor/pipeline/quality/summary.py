"""The run summary: what landed, what was quarantined, how full the fields are, how fast.

``summarize_run`` returns a JSON-safe dict (stored in ``runs.summary`` and logged with
``format_summary``); ``reconcile`` checks that every discovered receipt ended as exactly
one of loaded / quarantined and raises ``ReconciliationError`` when one went missing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from extractor.errors import ExtractorError
from extractor.schema import ExtractionResult, scalar_fields


class ReconciliationError(ExtractorError):
    """A discovered receipt is neither loaded nor quarantined (or one appeared from nowhere)."""


def reconcile(discovered_ids: Iterable[str], valid: Sequence[ExtractionResult],
              quarantined: Sequence[Any]) -> dict[str, int]:
    """Every discovered id must be loaded or quarantined, and nothing else may appear."""
    discovered = set(discovered_ids)
    loaded = {r.receipt_id for r in valid}
    held = {q.receipt_id for q in quarantined}
    missing = discovered - loaded - held
    unexpected = (loaded | held) - discovered
    both = loaded & held
    counts = {"discovered": len(discovered), "loaded": len(loaded), "quarantined": len(held),
              "missing": len(missing), "unexpected": len(unexpected), "both": len(both)}
    if missing or unexpected or both:
        sample = sorted(missing)[:3] or sorted(unexpected)[:3] or sorted(both)[:3]
        raise ReconciliationError(f"counts do not reconcile: {counts}; e.g. {sample}")
    return counts


def field_fill_rates(results: Sequence[ExtractionResult]) -> dict[str, float]:
    """Share of receipts (status ok) with each field filled; line_items = at least one."""
    receipts = [r.receipt for r in results if r.status == "ok" and r.receipt is not None]
    if not receipts:
        return {}
    n = len(receipts)
    rates = {f: sum(getattr(rc, f) is not None for rc in receipts) / n for f in scalar_fields()}
    rates["line_items"] = sum(bool(rc.line_items) for rc in receipts) / n
    return {k: round(v, 4) for k, v in rates.items()}


def mean_confidence(results: Sequence[ExtractionResult]) -> dict[str, float]:
    """Mean per-field confidence over the receipts whose backend gave one (empty otherwise)."""
    values: dict[str, list[float]] = {}
    for r in results:
        if r.status == "ok" and r.receipt is not None:
            for name, value in (r.receipt.confidence or {}).items():
                values.setdefault(name, []).append(float(value))
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(values.items())}


def quarantine_reasons_by_stage(quarantined: Sequence[Any]) -> dict[str, dict[str, int]]:
    """``{stage: {reason: count}}``: a validate-stage receipt counts once per failed expectation,
    an extract-stage one under the first line of its reason."""
    out: dict[str, Counter[str]] = {}
    for q in quarantined:
        reasons = q.failed_expectations or [q.reason.splitlines()[0][:120] if q.reason else "unknown"]
        out.setdefault(q.stage, Counter()).update(reasons)
    return {stage: dict(counter.most_common()) for stage, counter in sorted(out.items())}


def stage_timings(staged: Sequence[Mapping[str, Any]], validate_s: float) -> dict[str, float]:
    """Seconds per pipeline stage, summed over the extract tasks' staged results."""
    return {"extract_s": sum(s.get("extract_s", 0.0) for s in staged),
            "extract_tasks_s": sum(s.get("task_s", 0.0) for s in staged),
            "model_load_s": sum(s.get("model_load_s", 0.0) for s in staged),
            "read_s": sum(s.get("read_s", 0.0) for s in staged),
            "validate_s": validate_s}


def summarize_run(results: Sequence[ExtractionResult], outcome: Any = None, *,
                  load_counts: Mapping[str, int] | None = None,
                  discovered: int | None = None,
                  timings: Mapping[str, float] | None = None,
                  top_reasons: int = 10) -> dict[str, Any]:
    """Counts, fill rates, quarantine reasons and throughput for one run.

    ``outcome`` is the ``ValidationOutcome`` (None before validation ran); ``timings``
    maps pipeline stages to seconds (``total_s`` for the whole run, ``extract_s`` ...).
    """
    timings = {k: float(v) for k, v in (timings or {}).items()}
    n = len(results)
    extract_failed = sum(r.status != "ok" for r in results)
    counts: dict[str, Any] = {"results": n, "extracted_ok": n - extract_failed,
                              "extract_failed": extract_failed}
    if discovered is not None:
        counts["discovered"] = discovered
    reasons: Counter[str] = Counter()
    if outcome is not None:
        counts.update(valid=len(outcome.valid), quarantined=len(outcome.quarantined),
                      validation_failed=sum(q.stage == "validate" for q in outcome.quarantined))
        for q in outcome.quarantined:
            if q.failed_expectations:
                reasons.update(q.failed_expectations)
            else:
                reasons[f"{q.stage}: {q.reason.splitlines()[0][:120]}"] += 1
    if load_counts:
        counts["loaded"] = int(load_counts.get("receipts", 0))
        counts["loaded_line_items"] = int(load_counts.get("line_items", 0))

    per_receipt_extract = [r.timings.get("total_s") or sum(r.timings.values()) for r in results
                           if r.timings]
    throughput: dict[str, float] = {}
    if timings.get("total_s"):
        throughput["receipts_per_s"] = round(n / timings["total_s"], 3)
    if timings.get("extract_s"):
        throughput["extract_receipts_per_s"] = round(n / timings["extract_s"], 3)
    if per_receipt_extract:
        throughput["mean_receipt_s"] = round(sum(per_receipt_extract) / len(per_receipt_extract), 4)
    if timings.get("total_s") and timings.get("extract_s"):
        throughput["overhead_share"] = round(1 - timings["extract_s"] / timings["total_s"], 4)

    return {
        "counts": counts,
        "decision": getattr(outcome, "decision", None),
        "quarantine_rate": (outcome.stats.get("quarantine_rate") if outcome is not None else None),
        "fill_rates": field_fill_rates(results),
        "mean_confidence": mean_confidence(results),
        "quarantine_reasons": quarantine_reasons_by_stage(outcome.quarantined if outcome is not None else []),
        "top_quarantine_reasons": dict(reasons.most_common(top_reasons)),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "throughput": throughput,
        "extractor_versions": sorted({r.extractor_version for r in results}),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few readable lines for the task log."""
    lines = ["run summary: " + ", ".join(f"{k}={v}" for k, v in summary["counts"].items())]
    if summary.get("decision"):
        lines.append(f"  decision={summary['decision']} quarantine_rate={summary.get('quarantine_rate')}")
    if summary.get("fill_rates"):
        lines.append("  fill rates: " + ", ".join(f"{k} {v:.0%}" for k, v in summary["fill_rates"].items()))
    if summary.get("top_quarantine_reasons"):
        lines.append("  quarantine reasons: " + ", ".join(
            f"{k} x{v}" for k, v in summary["top_quarantine_reasons"].items()))
    if summary.get("throughput"):
        lines.append("  throughput: " + ", ".join(f"{k}={v}" for k, v in summary["throughput"].items()))
    return "\n".join(lines)
