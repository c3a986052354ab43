"""A warehouse with a history of runs, filled the way the pipeline fills it (synthetic
results -> GX validation -> run summary -> one-transaction load), for the quality report's
tests, the browser test and the docs' screenshots.

``fill_history`` loads ``days`` daily runs of ``OLD`` and then switches to ``NEW``, a
worse model: more extraction failures and expectation failures, and it never reads the
phone, so the report must show the switch as a step.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from extractor.pipeline.quality.summary import summarize_run
from extractor.pipeline.quality.validation import validate_results
from extractor.pipeline.records import RunRecord
from extractor.testing.synthetic_results import make_results

OLD = "ocr:rapidocr@3.10.0:parser-v3"
NEW = "hf:meta-llama/Llama-3.2-11B-Vision-Instruct@abc123:prompt-v2"
SPEED = {OLD: 2.0, NEW: 8.0}  # receipts/s recorded for each version's runs


def load_day(warehouse: Any, day: dt.date, version: str, *, receipts: int = 40,
             bad_share: float = 0.05, failed_share: float = 0.02,
             data_docs_dir: str | None = None) -> dict[str, Any]:
    """One daily run of ``version`` over ``receipts`` synthetic receipts; returns its summary."""
    results, _ = make_results(receipts, seed=day.toordinal(), bad_share=bad_share,
                              failed_share=failed_share, logical_date=day, extractor_version=version)
    if version == NEW:  # the new model never reads the phone
        for r in results:
            if r.receipt is not None:
                r.receipt = r.receipt.model_copy(update={"phone": None})
    run_id = f"scheduled__{day}T00:00:00+00:00"
    outcome = validate_results(results, thresholds={"max_quarantine_rate_fail": 1.0},
                               logical_date=day, run_id=run_id, data_docs_dir=data_docs_dir)
    started = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1), tzinfo=dt.UTC)
    summary = summarize_run(results, outcome, discovered=len(results),
                            timings={"extract_s": receipts / SPEED.get(version, 1.0)})
    warehouse.load(outcome.valid, outcome.quarantined, RunRecord(
        run_id=run_id, dag_id="receipts_daily", logical_date=day, partition_start=day,
        partition_end=day + dt.timedelta(days=1), extractor_version=version, model_id=None,
        revision=None, prompt_version=None, started_at=started,
        finished_at=started + dt.timedelta(minutes=5), counts=summary["counts"],
        timings=summary["timings"], decision=outcome.decision, summary=summary))
    return summary


def fill_history(warehouse: Any, first: dt.date, switch: dt.date, last: dt.date, *,
                 receipts: int = 40, data_docs_dir: str | None = None) -> None:
    """Daily runs from ``first`` to ``last``: ``OLD`` before ``switch``, ``NEW`` from it on."""
    day = first
    while day <= last:
        if day < switch:
            load_day(warehouse, day, OLD, receipts=receipts, data_docs_dir=data_docs_dir)
        else:
            load_day(warehouse, day, NEW, receipts=receipts, bad_share=0.25, failed_share=0.10,
                     data_docs_dir=data_docs_dir)
        day += dt.timedelta(days=1)
