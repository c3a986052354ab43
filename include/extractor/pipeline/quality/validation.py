"""Validate staged extraction results with Great Expectations 1.x.

One call = one ephemeral GX context, one pandas batch holding every staged receipt of
the run, one checkpoint run with ``result_format="COMPLETE"`` (so each failing
expectation names its failing rows), and optionally the run's Data Docs page
(``quality.datadocs``: the project's own offline HTML, not GX's CDN-backed site).
Failing rows become ``QuarantineRecord``s listing the failed expectations; extraction
failures are quarantined without being validated; ``Thresholds`` turn the quarantine
rate into a decision: pass, alert or fail.

great_expectations is imported inside the function (it takes seconds to import); the
cost is paid once per process and is reported in ``stats["timings"]``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from extractor.errors import ExtractorError
from extractor.pipeline.quality.expectations import Check, Thresholds, build_checks, cross_field_flags
from extractor.pipeline.records import Decision, QuarantineRecord
from extractor.schema import ExtractionResult, Receipt, scalar_fields

__all__ = ["Thresholds", "ValidationOutcome", "QuarantineRecord", "validate_results"]

log = logging.getLogger(__name__)
SUITE_NAME = "receipts"


@dataclass
class ValidationOutcome:
    valid: list[ExtractionResult]
    quarantined: list[QuarantineRecord]
    decision: Decision
    stats: dict[str, Any]
    data_docs_path: str | None = None


class ValidationRunError(ExtractorError):
    """The suite itself could not run (an expectation raised): a run-level failure."""


# ----------------------------------------------------------------------------- frame

def results_frame(results: Sequence[ExtractionResult], thresholds: Thresholds):
    """One row per result: schema fields typed for GX (money as float for range checks;
    exact Decimal arithmetic happens in the check_* columns), plus the cross-field flags."""
    import pandas as pd

    receipts = [r.receipt or Receipt() for r in results]
    columns: dict[str, Any] = {"receipt_id": pd.array([r.receipt_id for r in results], dtype=object)}
    for name in scalar_fields():
        values = [getattr(rc, name) for rc in receipts]
        kind = Receipt.model_fields[name].annotation
        if dt.date in _args(kind):
            columns[name] = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce")
        elif Decimal in _args(kind):
            columns[name] = pd.array([float("nan") if v is None else float(v) for v in values],
                                     dtype="float64")
        else:
            columns[name] = pd.array(values, dtype=object)
    flags = [cross_field_flags(r, thresholds) for r in results]
    for name in flags[0] if flags else ():
        columns[name] = pd.array([f[name] for f in flags], dtype=bool)
    return pd.DataFrame(columns)


def _args(annotation: Any) -> tuple:
    import typing
    return typing.get_args(annotation) or (annotation,)


# ----------------------------------------------------------------------------- GX run

def run_suite(frame, checks: Sequence[Check], *, run_id: str) -> tuple[list[dict], dict[str, float]]:
    """Run the checks with GX on one batch; returns per-check results (check name,
    success, unexpected row positions) and timings."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    quiet_gx_logging()
    t0 = time.perf_counter()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    t1 = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    # The ephemeral context comes with a docs site in a fresh temp dir that every docs
    # build would fill (megabytes per run, never removed). Our Data Docs are our own
    # static pages (quality.datadocs), so no GX site is built at all.
    for site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(site)
    batch = (context.data_sources.add_pandas("staged")
             .add_dataframe_asset("staged_results")
             .add_batch_definition_whole_dataframe("run"))
    # Built whole and added once: add_expectation() one by one re-serialises the suite
    # on every call (half a second for this suite).
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=[
        getattr(gx.expectations, c.expectation)(
            column=c.column, **c.kwargs,
            meta={"check": c.name, "severity": c.severity, "description": c.description})
        for c in checks]))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="staged_results", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="receipts_run", validation_definitions=[definition], actions=[],
        result_format="COMPLETE"))
    t2 = time.perf_counter()
    result = checkpoint.run(batch_parameters={"dataframe": frame},
                            run_id=gx.RunIdentifier(run_name=run_id))
    t3 = time.perf_counter()

    per_check = _per_check_results(result)
    timings = {"gx_import_s": t1 - t0, "gx_setup_s": t2 - t1, "gx_run_s": t3 - t2}
    return per_check, timings


def quiet_gx_logging() -> None:
    """GX logs one INFO line per public-API function it registers at import ("Skipping
    registering function ...": 214 of the 234 lines of a validate_and_load log)."""
    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)


# ----------------------------------------------------------------------------- entry point

def _per_check_results(result) -> list[dict]:
    """A checkpoint result as (check name, success, unexpected rows) per check; an
    expectation that raised instead of running fails the run."""
    per_check, errors = [], []
    for validation in result.run_results.values():
        for r in validation.results:
            meta = r.expectation_config.meta or {}
            if r.exception_info and r.exception_info.get("raised_exception"):
                errors.append(f"{meta.get('check')}: {r.exception_info.get('exception_message')}")
                continue
            per_check.append({"check": meta["check"], "success": bool(r.success),
                              "unexpected_index_list": list(r.result.get("unexpected_index_list") or []),
                              "unexpected_count": int(r.result.get("unexpected_count") or 0)})
    if errors:
        raise ValidationRunError("expectations could not run: " + "; ".join(errors))
    return per_check


def validate_results(results: Sequence[ExtractionResult], *,
                     thresholds: Thresholds | Mapping[str, Any] | None = None,
                     logical_date: dt.date | dt.datetime, run_id: str,
                     data_docs_dir: str | None = None) -> ValidationOutcome:
    """Split results into valid and quarantined and decide pass / alert / fail."""
    started = time.perf_counter()
    thresholds = Thresholds.coerce(thresholds)
    if isinstance(logical_date, dt.datetime):
        logical_date = logical_date.date()
    checks = build_checks(thresholds, logical_date)

    to_validate, quarantined = _quarantine_failed_extractions(results)
    n_extract_failed = len(quarantined)

    per_check: list[dict] = []
    gx_timings: dict[str, float] = {}
    valid: list[ExtractionResult] = []
    if to_validate:
        frame = results_frame(to_validate, thresholds)
        per_check, gx_timings = run_suite(frame, checks, run_id=run_id)
        valid, failed_validation = _split_by_failed_checks(to_validate, per_check, checks)
        quarantined += failed_validation

    n = len(results)
    rate = len(quarantined) / n if n else 0.0
    decision, why = decide(n, rate, thresholds)
    stats = {
        "run_id": run_id, "logical_date": logical_date.isoformat(),
        "rows": n, "validated": len(to_validate), "valid": len(valid),
        "quarantined": len(quarantined), "extract_failed": n_extract_failed,
        "validation_failed": len(quarantined) - n_extract_failed,
        "quarantine_rate": round(rate, 6), "decision": decision, "decision_reason": why,
        "checks": _check_stats(per_check, checks),
        "thresholds": thresholds.to_dict(),
        "timings": {**{k: round(v, 4) for k, v in gx_timings.items()},
                    "total_s": round(time.perf_counter() - started, 4)},
    }
    # Every run gets its page, also one where nothing reached validation (all bad images).
    docs_path = _write_data_docs(data_docs_dir, stats, quarantined, results)
    stats["data_docs_path"] = docs_path
    log.info("validation run_id=%s rows=%d valid=%d quarantined=%d rate=%.3f decision=%s (%s)",
             run_id, n, len(valid), len(quarantined), rate, decision, why)
    return ValidationOutcome(valid=valid, quarantined=quarantined, decision=decision,
                             stats=stats, data_docs_path=docs_path)


def _quarantine_failed_extractions(results: Sequence[ExtractionResult]
                                   ) -> tuple[list[ExtractionResult], list[QuarantineRecord]]:
    """(results with a receipt to validate, quarantine rows of those without one)."""
    quarantined: list[QuarantineRecord] = []
    to_validate: list[ExtractionResult] = []
    for r in results:
        if r.status == "ok" and r.receipt is not None:
            to_validate.append(r)
            continue
        reason = r.reason or ("backend reported ok but returned no receipt" if r.status == "ok"
                              else "extraction failed (the backend gave no reason)")
        quarantined.append(QuarantineRecord(
            receipt_id=r.receipt_id, source=r.source, extractor_version=r.extractor_version,
            stage="extract", reason=reason, raw_text=r.raw_text, timings=dict(r.timings)))
    return to_validate, quarantined


def _split_by_failed_checks(to_validate: Sequence[ExtractionResult], per_check: list[dict],
                            checks: Sequence[Check]
                            ) -> tuple[list[ExtractionResult], list[QuarantineRecord]]:
    """(valid results, quarantine rows of the ones an error-severity check failed on)."""
    by_name = {c.name: c for c in checks}
    failed_by_row: dict[int, list[Check]] = {}
    for pc in per_check:
        check = by_name[pc["check"]]
        if check.severity == "error":
            for row in pc["unexpected_index_list"]:
                failed_by_row.setdefault(int(row), []).append(check)
    valid: list[ExtractionResult] = []
    quarantined: list[QuarantineRecord] = []
    for i, r in enumerate(to_validate):
        failed = failed_by_row.get(i)
        if not failed:
            valid.append(r)
            continue
        quarantined.append(QuarantineRecord(
            receipt_id=r.receipt_id, source=r.source, extractor_version=r.extractor_version,
            stage="validate",
            reason="failed expectations: " + "; ".join(c.description for c in failed),
            failed_expectations=[c.label for c in failed], raw_text=r.raw_text,
            receipt=r.receipt.model_dump(mode="json") if r.receipt else None,
            timings=dict(r.timings)))
    return valid, quarantined


def _check_stats(per_check: list[dict], checks: Sequence[Check]) -> list[dict[str, Any]]:
    """One entry per check that ran: column, expectation, severity, success, failures."""
    out = []
    for pc in per_check:
        check = by_check(checks, pc["check"])
        out.append({"check": pc["check"], "column": check.column, "expectation": check.label,
                    "severity": check.severity, "description": check.description,
                    "success": pc["success"],
                    "unexpected_count": pc["unexpected_count"]})
    return out


def _write_data_docs(data_docs_dir: str | None, stats: dict[str, Any],
                     quarantined: Sequence[QuarantineRecord],
                     results: Sequence[ExtractionResult]) -> str | None:
    if not data_docs_dir:
        return None
    from extractor.pipeline.quality.datadocs import docs_record, write_run_docs

    record = docs_record(stats, quarantined, (r.extractor_version for r in results))
    return str(write_run_docs(data_docs_dir, record))


def by_check(checks: Sequence[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def decide(n_rows: int, quarantine_rate: float, t: Thresholds) -> tuple[Decision, str]:
    """Suite-level decision from the row count and the quarantine rate."""
    if n_rows < t.min_rows:
        return "fail", f"{n_rows} rows, fewer than min_rows={t.min_rows}"
    if quarantine_rate > t.max_quarantine_rate_fail:
        return "fail", f"quarantine rate {quarantine_rate:.1%} > {t.max_quarantine_rate_fail:.1%}"
    if quarantine_rate > t.max_quarantine_rate_alert:
        return "alert", f"quarantine rate {quarantine_rate:.1%} > {t.max_quarantine_rate_alert:.1%}"
    return "pass", f"quarantine rate {quarantine_rate:.1%} within limits"
