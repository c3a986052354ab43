"""SROIE-style scoring, the report formats, and evaluate() on a real backend."""

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

import extractor
from extractor.evaluation import EvalReport, evaluate, field_match, loose_match, normalize_text, similarity

SAMPLES = Path(extractor.__file__).parent / "samples" / "receipts"


@pytest.mark.parametrize("raw, norm", [
    ("No.5,  Jalan  2 ", "NO5 JALAN 2"),
    ("mr d.i.y. (m) sdn bhd", "MR DIY M SDN BHD"),
    ("  ", ""),
    (None, ""),
])
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_text_fields_exact_and_near():
    assert field_match("company", "Mr D.I.Y. (M) Sdn. Bhd.", "MR D.I.Y. (M) SDN BHD") == (True, True)
    # one dropped character in a long address: not exact, but near
    label = "27, JALAN DEDAP 13, TAMAN JOHOR JAYA, 81100 JOHOR BAHRU, JOHOR."
    assert field_match("address", label.replace("DEDAP", "DEDA"), label) == (False, True)
    assert field_match("address", "TAMAN JOHOR JAYA", label) == (False, False)
    assert field_match("company", None, "X") == (False, False)
    assert field_match("company", "", "") == (False, False)  # an empty label never scores
    assert similarity("abc", "ABC") == 1.0


def test_loose_match_reads_punctuation_as_space():
    assert loose_match("address", "27,JALAN DEDAP", "27, JALAN DEDAP")
    assert not field_match("address", "27,JALAN DEDAP", "27, JALAN DEDAP")[0]
    assert not loose_match("address", "27JALAN DEDAP", "27, JALAN DEDAP")
    assert loose_match("total", "60.30", "60.3") and not loose_match("company", "", "")


def test_dates_and_totals_compare_as_values():
    assert field_match("date", "2018-10-19", "19/10/2018") == (True, True)
    assert field_match("date", "2018-10-19", "19/10/18") == (True, True)
    assert field_match("date", "2018-10-20", "19/10/2018") == (False, False)
    assert field_match("total", Decimal("60.3"), "RM60.30") == (True, True)
    assert field_match("total", "60.31", "60.30") == (False, False)
    assert field_match("total", None, "") == (False, False)
    assert field_match("date", "garbage", "19/10/2018") == (False, False)


def test_report_formats(tmp_path):
    report = EvalReport(model="m", dataset="d")
    report.add("a", {"company": "X SDN BHD", "date": "2018-01-02", "total": "1.00"},
               {"company": "X SDN BHD", "address": "Y", "date": "02/01/2018", "total": "2.00"})
    report.add("b", {}, {"company": "Z", "address": "Y", "date": "", "total": "3.00"}, reason="bad image")
    d = report.to_dict()
    assert d["receipts"] == 2 and d["failed"] == 1
    assert d["fields"]["company"] == {"exact": 0.5, "near": 0.5, "exact_punctuation_as_space": 0.5, "n": 2}
    assert d["fields"]["total"]["exact"] == 0.0
    json.dumps(d)  # JSON-safe
    md = report.to_markdown()
    assert "| company | 50.0% | 50.0% | 50.0% |" in md and "| address | 0.0% | 0.0% | 0.0% |" in md
    png = report.save_chart(tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_runs_a_real_backend_on_a_labelled_folder(tmp_path):
    """Two bundled SROIE receipts laid out like sroie-dev, read by the real OCR backend."""
    from extractor.backends.ocr import OCRBackend
    from extractor.spec import resolve_spec

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for rid in ("X51005442397", "X51006466062"):
        shutil.copy(SAMPLES / f"{rid}.jpg", tmp_path / "images" / f"{rid}.jpg")
        shutil.copy(SAMPLES / f"{rid}.label.json", tmp_path / "labels" / f"{rid}.json")
    backend = OCRBackend(resolve_spec("ocr"))
    calls = []
    report = evaluate(backend, tmp_path, progress=lambda done, total: calls.append((done, total)))
    backend.close()
    assert report.n == 2 and report.failed == 0 and calls[-1] == (2, 2)
    assert report.fields["date"].exact == 2
    # the OCR reader's per-field confidence rides along in every row (review routing is judged on it)
    assert all(0 < row[key]["confidence"] <= 1 for row in report.rows for key in ("company", "date", "total"))
    assert [row["id"] for row in report.rows] == ["X51005442397", "X51006466062"]
    assert evaluate(OCRBackend(resolve_spec("ocr"), workers=1), tmp_path, limit=1).n == 1


def test_rows_keep_the_confidence_given_and_the_routing_bench_counts_it(tmp_path):
    """A field's confidence is kept in its row; bench/ocr_review_routing.py counts which wrong
    values a threshold would send to review and which right ones it would send for nothing."""
    import importlib.util

    report = EvalReport(model="m", dataset="d")
    label = {"company": "X SDN BHD", "address": "Y", "date": "02/01/2018", "total": "2.00"}
    right = {"company": "X SDN BHD", "address": "Y", "date": "2018-01-02", "total": "2.00"}
    report.add("a", right, label, confidence={"company": 0.9, "date": 0.99, "total": 0.3})  # right, flagged
    report.add("b", {**right, "total": "9.00"}, label, confidence={"company": 0.9, "date": 0.99, "total": 0.4})
    report.add("c", {**right, "company": "Q"}, label, confidence={"company": 0.8, "date": 0.99, "total": 0.9})
    report.add("d", right, label)  # no confidence given: none recorded
    assert report.rows[0]["total"]["confidence"] == 0.3 and "confidence" not in report.rows[3]["total"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"cv": report.to_dict()}))
    bench = Path(__file__).parents[2] / "bench" / "ocr_review_routing.py"
    spec = importlib.util.spec_from_file_location("routing", bench)
    routing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(routing)
    routing.main([str(path), "--protocol", "cv", "--out", str(tmp_path / "out.json")])
    out = json.loads((tmp_path / "out.json").read_text())["wrong = not exact"]
    assert out["receipts"] == {"receipts": 4, "with_a_wrong_required_field": 2, "of_those_flagged": 1,
                               "all_right_but_flagged": 1}
    total = out["fields"]["total"]
    assert (total["values"], total["wrong"], total["wrong_caught"], total["right_flagged"]) == (3, 1, 1, 1)
    assert out["fields"]["company"]["wrong_caught"] == 0  # "Q" at 0.8: a mistake the threshold lets through
