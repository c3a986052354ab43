"""Validation with Great Expectations: each rule catches its bad value, good rows pass,
thresholds decide pass / alert / fail, Data Docs are written.

GX runs for real (ephemeral context, pandas batch); its import costs a few seconds
once per process, so the rule cases share one validated batch.
"""

import datetime as dt
import hashlib
import os
import re
from decimal import Decimal

import pytest

from extractor.errors import ConfigError
from extractor.pipeline.quality.expectations import Thresholds, build_checks
from extractor.pipeline.quality.validation import decide, validate_results
from extractor.schema import ExtractionResult, LineItem, Receipt, scalar_fields
from extractor.testing.synthetic_results import BREAKAGES, make_results

LOGICAL = dt.date(2024, 6, 30)
VERSION = "ocr:rapidocr@3.10.0:parser-v3"


def rid(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


GOOD = Receipt(store_name="Corner Grocery", date="2024-06-29", time="18:05", currency="USD",
               subtotal="10.00", tax_amount="0.60", tax_rate="6", total="10.60",
               payment_method="card", card_last4="4242", phone="+1 555 0100",
               line_items=[LineItem(name="Milk", quantity=2, unit_price="2.50", line_total="5.00"),
                           LineItem(name="Bread", quantity=1, unit_price="5.00", line_total="5.00")])

# name -> (fields to change with model_copy, the check that must catch it)
BAD_CASES = {
    "future_date": ({"date": LOGICAL + dt.timedelta(days=2)}, "date_in_window"),
    "too_old": ({"date": dt.date(2001, 1, 1)}, "date_in_window"),
    "negative_total": ({"total": Decimal("-10.60"), "subtotal": None, "line_items": []}, "total_in_range"),
    "negative_tax": ({"tax_amount": Decimal("-0.60"), "tax_rate": None, "total": Decimal("9.40")},
                     "tax_amount_in_range"),
    "total_not_sum": ({"total": Decimal("15.00")}, "check_total_arithmetic"),
    "bad_currency": ({"currency": "XYZ"}, "currency_iso4217"),
    "missing_total": ({"total": None}, "total_present"),
    "missing_store": ({"store_name": None}, "store_name_present"),
    "missing_date": ({"date": None}, "date_present"),
    "bad_time": ({"time": "7.5h"}, "time_format"),
    "bad_card": ({"card_last4": "42x2"}, "card_last4_digits"),
    "tax_rate_45": ({"tax_rate": Decimal("45")}, "tax_rate_in_range"),
    "insane_total": ({"total": Decimal("500000"), "subtotal": None, "line_items": []}, "total_in_range"),
    "items_dont_add_up": ({"line_items": GOOD.line_items + [LineItem(name="x", line_total="7.00")]},
                          "check_line_items_sum"),
    "overflowing_item": ({"line_items": [LineItem(name="x", quantity=1, unit_price=Decimal("1e12"),
                                                  line_total=Decimal("1e12"))]}, "check_amounts_fit_warehouse"),
    "endless_name": ({"store_name": "LOREM " * 100}, "store_name_length"),
}
GOOD_CASES = {
    "good": {},
    "tax_inclusive_subtotal": {"subtotal": Decimal("10.60"), "line_items": []},
    "with_discount_and_tip": {"discount": Decimal("1.00"), "tip": Decimal("2.00"),
                              "total": Decimal("11.60")},
    "only_required": {"subtotal": None, "tax_amount": None, "tax_rate": None, "time": None,
                      "currency": None, "card_last4": None, "phone": None, "line_items": []},
    "odd_phone_is_only_a_warning": {"phone": "call us!"},
    "today_plus_grace": {"date": LOGICAL + dt.timedelta(days=1)},
}


def result(name: str, **update) -> ExtractionResult:
    return ExtractionResult(receipt_id=rid(name), source=f"{name}.jpg", status="ok",
                            receipt=GOOD.model_copy(update=update), raw_text=f"raw {name}",
                            extractor_version=VERSION)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    docs = tmp_path_factory.mktemp("data_docs")
    results = [result(n, **u) for n, (u, _) in BAD_CASES.items()]
    results += [result(n, **u) for n, u in GOOD_CASES.items()]
    results.append(ExtractionResult.failed(receipt_id=rid("unreadable"), source="unreadable.jpg",
                                           reason="not a JPEG", raw_text=None,
                                           extractor_version=VERSION))
    results.append(result("dup_a"))
    twin = result("dup_b")
    twin.receipt_id = rid("dup_a")  # the same bytes twice in one batch
    results.append(twin)
    return validate_results(results, thresholds=Thresholds(), logical_date=LOGICAL,
                            run_id="manual__2024-06-30", data_docs_dir=str(docs))


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_each_rule_quarantines_its_bad_value(outcome, name):
    by_id = {q.receipt_id: q for q in outcome.quarantined}
    record = by_id[rid(name)]
    check = next(c for c in build_checks(Thresholds(), LOGICAL) if c.name == BAD_CASES[name][1])
    assert record.stage == "validate"
    assert check.label in record.failed_expectations
    assert check.description in record.reason
    assert record.raw_text == f"raw {name}" and record.receipt is not None


def test_good_receipts_pass(outcome):
    assert {r.receipt_id for r in outcome.valid} == {rid(n) for n in GOOD_CASES}


def test_extract_failures_and_duplicates_are_quarantined(outcome):
    by_id = {}
    for q in outcome.quarantined:
        by_id.setdefault(q.receipt_id, []).append(q)
    [failed] = by_id[rid("unreadable")]
    assert failed.stage == "extract" and failed.reason == "not a JPEG" and failed.failed_expectations == []
    dups = by_id[rid("dup_a")]
    assert len(dups) == 2
    assert all(q.failed_expectations == ["expect_column_values_to_be_unique(receipt_id)"] for q in dups)


def test_stats_decision_and_warnings(outcome):
    s = outcome.stats
    n = len(BAD_CASES) + len(GOOD_CASES) + 3
    assert s["rows"] == n and s["valid"] == len(GOOD_CASES)
    assert s["quarantined"] == n - len(GOOD_CASES) and s["extract_failed"] == 1
    assert outcome.decision == "fail" and "quarantine rate" in s["decision_reason"]
    phone = next(c for c in s["checks"] if c["check"] == "phone_format")
    assert phone["severity"] == "warn" and phone["unexpected_count"] == 1
    assert set(s["timings"]) >= {"gx_import_s", "gx_run_s", "total_s"}
    import json
    json.dumps(s)  # JSON-safe for XCom / the runs table


def test_data_docs_page_is_written(outcome):
    page = outcome.data_docs_path
    assert page and page.endswith(".html") and outcome.stats["data_docs_path"] == page
    html = open(page, encoding="utf-8").read()
    # cross-field checks read as rules, not "values must belong to this set: True"
    assert "values must belong to this set" not in html
    assert "line totals sum to the subtotal or total" in html and "check_total_arithmetic" in html
    # every receipt that did not load is listed, the extraction failure with its stage
    assert html.count('class="quarantine-row"') == len(outcome.quarantined)
    assert "unreadable.jpg" in html and "not a JPEG" in html and 'class="stage-extract"' in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    # a later run into the same folder: its own page, and the index lists both runs
    root = os.path.dirname(os.path.dirname(page))
    later = validate_results([result("later")], logical_date=LOGICAL,
                             run_id="scheduled__2024-07-01T00:00:00+00:00", data_docs_dir=root)
    assert later.data_docs_path != page and os.path.exists(later.data_docs_path)
    index = open(os.path.join(root, "index.html"), encoding="utf-8").read()
    assert "manual__2024-06-30" in index and "scheduled__2024-07-01T00:00:00+00:00" in index
    assert os.path.basename(page) in index and os.path.basename(later.data_docs_path) in index


CHATTER_PROBE = """
import logging, sys, datetime as dt
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from extractor.pipeline.quality.validation import validate_results
from extractor.schema import ExtractionResult, Receipt
r = ExtractionResult(receipt_id="a" * 64, source="a.jpg", status="ok", extractor_version="v",
                     receipt=Receipt(store_name="S", date="2024-06-29", total="1.00"))
print("decision", validate_results([r], logical_date=dt.date(2024, 6, 30), run_id="r").decision)
"""


def test_gx_registration_chatter_is_silenced():
    """A fresh process (GX not yet imported), logging at INFO as a task log does: GX's
    one-line-per-function "Skipping registering function" chatter stays out."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", CHATTER_PROBE], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "decision pass" in out.stdout
    assert "validation run_id=r" in out.stdout  # INFO logging really was on
    assert "Skipping registering function" not in out.stdout + out.stderr


def test_suite_is_derived_from_the_schema():
    checks = build_checks(Thresholds(), LOGICAL)
    columns = {c.column for c in checks}
    assert set(scalar_fields()) <= columns  # every field has at least one expectation
    assert len({c.name for c in checks}) == len(checks)
    window = next(c for c in checks if c.name == "date_in_window")
    assert window.kwargs["max_value"] == dt.datetime(2024, 7, 1)


def test_thresholds_from_config():
    t = Thresholds.from_dict({"max_quarantine_rate_alert": "0.1", "total_tolerance": 0.02,
                              "required_fields": ["total"], "severity": {"phone_format": "off"}})
    assert t.total_tolerance == Decimal("0.02") and t.required_fields == ("total",)
    assert not any(c.name in ("store_name_present", "phone_format") for c in build_checks(t, LOGICAL))
    assert Thresholds.from_dict(t.to_dict()) == t
    with pytest.raises(ConfigError, match="unknown"):
        Thresholds.from_dict({"max_rate": 1})
    with pytest.raises(ConfigError):
        Thresholds.from_dict({"max_quarantine_rate_alert": 0.6, "max_quarantine_rate_fail": 0.5})
    with pytest.raises(ValueError, match="unknown checks"):
        build_checks(Thresholds(severity={"nope": "warn"}), LOGICAL)
    with pytest.raises(ConfigError, match="unknown checks"):
        Thresholds.from_dict({"severity": {"nope": "warn"}})
    with pytest.raises(ConfigError, match="not a Receipt field"):
        Thresholds.from_dict({"required_fields": ["totl"]})
    with pytest.raises(ConfigError, match="error/warn/off"):
        Thresholds.from_dict({"severity": {"phone_format": "loud"}})


@pytest.mark.parametrize("n, rate, expected", [
    (100, 0.0, "pass"), (100, 0.2, "pass"), (100, 0.21, "alert"), (100, 0.5, "alert"),
    (100, 0.51, "fail"), (3, 0.0, "fail")])
def test_decision_from_rate_and_min_rows(n, rate, expected):
    assert decide(n, rate, Thresholds(min_rows=10))[0] == expected


def test_configured_requirements_change_the_outcome():
    t = Thresholds(required_fields=("total",), severity={"check_line_items_sum": "warn"},
                   max_quarantine_rate_alert=0.1, max_quarantine_rate_fail=0.9)
    results = [result("no_store", store_name=None), result("fine"),
               result("items_off", line_items=[LineItem(name="x", line_total="1.00")]),
               result("bad_currency", currency="XYZ")]
    out = validate_results(results, thresholds=t, logical_date=LOGICAL, run_id="r", data_docs_dir=None)
    assert {r.receipt_id for r in out.valid} == {rid("no_store"), rid("fine"), rid("items_off")}
    assert out.decision == "alert" and out.data_docs_path is None


def test_empty_batch_and_datetime_logical_date():
    out = validate_results([], logical_date=dt.datetime(2024, 6, 30, tzinfo=dt.UTC),
                           run_id="r")
    assert out.decision == "pass" and out.valid == [] and out.quarantined == []
    assert validate_results([], thresholds={"min_rows": 1}, logical_date=LOGICAL,
                            run_id="r").decision == "fail"


def test_synthetic_batch_quarantines_exactly_the_broken_receipts():
    results, broken = make_results(300, seed=7, bad_share=0.15, failed_share=0.03,
                                   logical_date=LOGICAL)
    assert set(broken.values()) >= set(BREAKAGES)  # every breakage kind present
    out = validate_results(results, logical_date=LOGICAL, run_id="r")
    assert {q.receipt_id for q in out.quarantined} == set(broken)
    assert len(out.valid) + len(out.quarantined) == len(results)


def test_docs_show_the_current_suite():
    from pathlib import Path

    from extractor.pipeline.quality.expectations import markdown_suite
    doc = (Path(__file__).parents[2] / "docs" / "validation.md").read_text(encoding="utf-8")
    assert markdown_suite() in doc, "regenerate: python -m extractor.pipeline.quality.expectations"


def test_importing_the_pipeline_library_stays_light():
    # GX takes seconds to import; drivers and pandas are loaded only by the code that needs them.
    import subprocess
    import sys

    code = ("import sys; import extractor.pipeline.quality.validation, extractor.pipeline.warehouse, "
            "extractor.pipeline.quality.alerts, extractor.pipeline.sources.staging, extractor.pipeline.quality.summary, "
            "extractor.pipeline.quality.expectations, extractor.pipeline.warehouse.duckdb_backend, "
            "extractor.pipeline.warehouse.postgres_backend; "
            "print([m for m in ('great_expectations', 'duckdb', 'psycopg', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
