"""Run summary and reconciliation (plain Python; no GX: the outcome is built by hand)."""

import json

import pytest

from extractor.pipeline.quality.summary import (
    ReconciliationError,
    field_fill_rates,
    format_summary,
    reconcile,
    summarize_run,
)
from extractor.pipeline.quality.validation import ValidationOutcome
from extractor.pipeline.records import QuarantineRecord
from extractor.schema import ExtractionResult, Receipt

V = "ocr:rapidocr@3.10.0:parser-v3"


def ok(i, **fields):
    return ExtractionResult(receipt_id=str(i), source=f"{i}.jpg", status="ok", extractor_version=V,
                            receipt=Receipt(**fields), timings={"forward_s": 0.5})


def failed(i):
    return ExtractionResult.failed(receipt_id=str(i), source=f"{i}.jpg", reason="not a JPEG",
                                   extractor_version=V)


def held(i, stage="validate", expectations=("expect_column_values_to_not_be_null(total)",)):
    return QuarantineRecord(str(i), f"{i}.jpg", V, stage, "x" if stage == "validate" else "not a JPEG",
                            list(expectations) if stage == "validate" else [])


def test_summary_counts_fill_rates_reasons_and_throughput():
    results = [ok(1, store_name="A", total="1.00"), ok(2, store_name="B"), ok(3), failed(4)]
    outcome = ValidationOutcome(valid=results[:1], quarantined=[held(2), held(3), held(4, "extract")],
                                decision="fail", stats={"quarantine_rate": 0.75})
    s = summarize_run(results, outcome, load_counts={"receipts": 1, "line_items": 0}, discovered=4,
                      timings={"total_s": 8.0, "extract_s": 6.0})
    assert s["counts"] == {"results": 4, "extracted_ok": 3, "extract_failed": 1, "discovered": 4,
                           "valid": 1, "quarantined": 3, "validation_failed": 2, "loaded": 1,
                           "loaded_line_items": 0}
    assert s["fill_rates"]["store_name"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["fill_rates"]["total"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["fill_rates"]["line_items"] == 0
    assert s["top_quarantine_reasons"] == {"expect_column_values_to_not_be_null(total)": 2,
                                           "extract: not a JPEG": 1}
    assert s["throughput"] == {"receipts_per_s": 0.5, "extract_receipts_per_s": 0.667,
                               "mean_receipt_s": 0.5, "overhead_share": 0.25}
    assert s["decision"] == "fail" and s["quarantine_rate"] == 0.75
    json.dumps(s)
    text = format_summary(s)
    assert "loaded=1" in text and "decision=fail" in text and "store_name 67%" in text


def test_reconcile():
    assert reconcile(["1", "2"], [ok(1)], [held(2)])["missing"] == 0
    with pytest.raises(ReconciliationError, match="'missing': 1"):
        reconcile(["1", "2", "3"], [ok(1)], [held(2)])
    with pytest.raises(ReconciliationError, match="'unexpected': 1"):
        reconcile(["1"], [ok(1)], [held(2)])
    with pytest.raises(ReconciliationError, match="'both': 1"):
        reconcile(["1"], [ok(1)], [held(1)])


def test_empty_run():
    assert field_fill_rates([]) == {}
    assert summarize_run([], None)["counts"] == {"results": 0, "extracted_ok": 0, "extract_failed": 0}
