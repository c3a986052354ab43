"""The review loop without Airflow: routing by confidence, the review queue, the form, the
answers in ``corrections`` and ``receipts_current``, and the export as an eval dataset, on a
real DuckDB file and real image files (the same contract runs on PostgreSQL in
tests/integration/test_warehouse_postgres.py through ``test_warehouse.WarehouseContract``)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from test_warehouse import run

from extractor.evaluation import EvalReport, load_labels
from extractor.pipeline.quality.confidence import flag_low_confidence
from extractor.pipeline.records import QuarantineRecord
from extractor.pipeline.review import corrections, export, form, queue
from extractor.pipeline.review.images import readable_image
from extractor.pipeline.warehouse import open_warehouse
from extractor.schema import ExtractionResult, Receipt, scalar_fields

REQUIRED = ("store_name", "date", "total")


def result(path, *, confidence, total="12.50", store="Kedai Maju") -> ExtractionResult:
    from extractor.images import receipt_id_of

    data = path.read_bytes()
    receipt = Receipt(store_name=store, date="2026-03-01", total=total, currency="MYR",
                      confidence=confidence)
    return ExtractionResult(receipt_id=receipt_id_of(data), source=str(path), status="ok",
                            receipt=receipt, raw_text=f'{{"total": "{total}"}}',
                            extractor_version="ocr:rapidocr@3:parser-v3")


@pytest.fixture
def images(tmp_path):
    from extractor.testing.synthetic import render_receipt

    paths = []
    for seed in (1, 2, 3):
        path = tmp_path / "incoming" / f"r{seed}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(render_receipt(seed)[0])
        paths.append(path)
    return paths


@pytest.fixture
def wh(tmp_path):
    w = open_warehouse(f"duckdb:///{tmp_path}/wh.duckdb")
    w.ensure_schema()
    yield w
    w.close()


def test_a_forced_low_confidence_field_yields_needs_review(images, wh):
    sure = result(images[0], confidence={"store_name": 0.99, "date": 0.98, "total": 0.97})
    unsure = result(images[1], confidence={"store_name": 0.99, "date": 0.98, "total": 0.12})
    not_required = result(images[2], confidence={"store_name": 0.9, "date": 0.9, "total": 0.9,
                                                 "phone": 0.01})
    flagged = flag_low_confidence([sure, unsure, not_required], required_fields=REQUIRED,
                                  min_confidence=0.5)
    assert [r.review_reason for r in flagged] == [None, "low confidence (< 0.5): total 0.120", None]
    assert flag_low_confidence([unsure], required_fields=REQUIRED, min_confidence=0)[0].review_reason is None
    wh.load(flagged, [], run())
    rows = wh.fetch("SELECT receipt_id, needs_review, review_reason FROM receipts ORDER BY source")
    assert [(r[1], r[2]) for r in rows] == [(False, None), (True, "low confidence (< 0.5): total 0.120"),
                                            (False, None)]
    items, left_out = queue.pending_reviews(wh, limit=10, image_problem=lambda item: None)
    assert [(i.receipt_id, i.origin) for i in items] == [(unsure.receipt_id, "needs_review")]
    assert items[0].confidence["total"] == 0.12
    assert Decimal(items[0].fields["total"]) == Decimal("12.50")
    assert left_out == {}


def _quarantine(path, reason="failed expectations: date in window", stage="validate"):
    from extractor.images import receipt_id_of

    receipt = Receipt(store_name="Kedai", date="2031-01-01", total="5.00", confidence={"date": 0.4})
    return QuarantineRecord(receipt_id=receipt_id_of(path.read_bytes()), source=str(path),
                            extractor_version="ocr:rapidocr@3:parser-v3", stage=stage,
                            reason=reason, receipt=receipt.model_dump(mode="json"), raw_text="raw")


def test_the_queue_takes_quarantined_receipts_with_a_readable_image_only(images, wh, tmp_path):
    gone = tmp_path / "incoming" / "gone.jpg"
    gone.write_bytes(images[2].read_bytes() + b"tail")  # another id; deleted below
    records = [_quarantine(images[0]), _quarantine(images[1], "bad image: not an image", "extract"),
               _quarantine(gone)]
    gone.unlink()
    wh.load([], records, run())
    items, left_out = queue.pending_reviews(
        wh, limit=10, image_problem=lambda item: readable_image(item.source, item.receipt_id))
    assert [i.receipt_id for i in items] == [records[0].receipt_id]
    assert items[0].origin == "quarantine" and items[0].fields["date"] == "2031-01-01"
    assert set(left_out) == {records[1].receipt_id, records[2].receipt_id}
    assert "cannot read" in left_out[records[2].receipt_id]
    images[0].write_bytes(b"changed")  # the file under the same name no longer matches the id
    assert "changed since it was extracted" in readable_image(str(images[0]), records[0].receipt_id)


def _answer(item, option, **edits):
    return {"chosen_options": [option], "params_input": {**item["fields"], **edits},
            "responded_by_user": {"id": "7", "name": "alice"},
            "responded_at": dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)}


def test_answers_become_corrections_and_receipts_current_prefers_them(images, wh):
    low = flag_low_confidence([result(images[0], confidence={"total": 0.1})],
                              required_fields=REQUIRED, min_confidence=0.5)
    wh.load(low + [result(images[1], confidence={})], [_quarantine(images[2])], run())
    items = {i.origin: i.to_dict() for i in queue.pending_reviews(
        wh, limit=10, image_problem=lambda item: None)[0]}
    fixed = corrections.from_response(items["needs_review"],
                                      _answer(items["needs_review"], "approve", total=13.9), run_id="rv")
    assert (fixed.decision, fixed.corrected_fields, fixed.reviewer) == ("correct", ["total"], "alice")
    rejected = corrections.from_response(items["quarantine"], _answer(items["quarantine"], "reject",
                                                                     total=1), run_id="rv")
    assert rejected.values["total"] == Decimal("5.00") and rejected.corrected_fields == []
    for c in (fixed, rejected, fixed):  # answering twice replaces, never duplicates
        corrections.record(wh, c)
    assert wh.fetch("SELECT decision, total, reviewer, corrected_fields FROM corrections "
                    "ORDER BY decision") == [("correct", Decimal("13.9"), "alice", '["total"]'),
                                             ("reject", Decimal("5.0"), "alice", "[]")]
    current = wh.fetch("SELECT receipt_id, total, values_from, review_decision, reviewed_by "
                       "FROM receipts_current ORDER BY values_from, receipt_id")
    assert [(r[1], r[2], r[3]) for r in current] == [
        (Decimal("12.5"), "model", None), (Decimal("13.9"), "reviewer", "correct")]
    # the model's rows are kept as they were
    assert sorted(wh.fetch("SELECT total FROM receipts")) == [(Decimal("12.5"),)] * 2
    assert wh.fetch("SELECT count(*) FROM quarantine") == [(1,)]
    assert queue.pending_reviews(wh, limit=10, image_problem=lambda item: None)[0] == []


def test_an_answer_that_does_not_validate_is_refused(images, wh):
    item = queue.ReviewItem(receipt_id="a" * 64, extractor_version="v", source="s",
                            origin="quarantine", reason="r", fields={}).to_dict()
    with pytest.raises(corrections.InvalidReview, match="date"):
        corrections.from_response(item, _answer(item, "correct", date="not a date"), run_id="rv")
    with pytest.raises(corrections.InvalidReview, match="expected one of"):
        corrections.from_response(item, _answer(item, "maybe"), run_id="rv")


def test_the_form_is_typed_prefilled_and_shows_why(images):
    item = queue.ReviewItem(
        receipt_id="ab" * 32, extractor_version="ocr:v", source="s3://b/dt=2026-03-01/x.jpg",
        origin="needs_review", reason="low confidence (< 0.5): total 0.120",
        fields={"store_name": "Kedai | Maju", "date": "2026-03-01", "total": "12.50"},
        confidence={"total": 0.12}, raw_text="TOTAL 12.50 ```").to_dict()
    params = form.field_params(item)
    assert list(params) == scalar_fields()
    assert params["total"] == {"title": "total", "description": "amount paid, including tax",
                               "type": ["null", "number"], "default": 12.5}
    assert params["date"]["format"] == "date" and params["date"]["default"] == "2026-03-01"
    assert params["phone"]["type"] == ["null", "string"] and params["phone"]["default"] is None
    body = form.body(item, base_path="/airflow/")
    assert f"![receipt image](/airflow/receipts-review/images/{'ab' * 32})" in body
    assert "low confidence (< 0.5): total 0.120" in body
    assert "| total | 12.50 | 0.120 |" in body and "Kedai \\| Maju" in body
    assert "TOTAL 12.50 '''" in body  # raw output cannot close the code block
    assert form.subject(item).startswith("Low-confidence receipt abababababab (Kedai | Maju)")


def test_export_writes_an_eval_dataset_of_accepted_answers(images, wh, tmp_path):
    low = flag_low_confidence([result(images[0], confidence={"total": 0.1})],
                              required_fields=REQUIRED, min_confidence=0.5)
    wh.load(low, [_quarantine(images[2])], run())
    items = {i.origin: i.to_dict() for i in queue.pending_reviews(
        wh, limit=10, image_problem=lambda item: None)[0]}
    flagged, quarantined = items["needs_review"], items["quarantine"]
    corrections.record(wh, corrections.from_response(flagged, _answer(flagged, "correct", total=12.75),
                                                     run_id="rv"))
    corrections.record(wh, corrections.from_response(quarantined, _answer(quarantined, "reject"),
                                                     run_id="rv"))
    out = tmp_path / "labels-out"
    summary = export.export_labels(wh, out)
    assert summary.to_dict() == {"exported": 1, "rejected_not_exported": 1, "missing_images": {}}
    [(image, label)] = load_labels(out)
    assert image.read_bytes() == images[0].read_bytes() and image.suffix == ".jpg"
    assert (label["company"], label["date_iso"], label["total_decimal"]) == (
        "Kedai Maju", "2026-03-01", "12.75")
    assert label["review"]["corrected_fields"] == ["total"] and label["flags"] == ["reviewed_correct"]
    report = EvalReport(model="the model's reading", dataset=str(out))
    report.add(label["id"], {"company": "KEDAI MAJU", "date": "2026-03-01", "total": "12.50"}, label)
    assert report.to_dict()["fields"]["total"]["exact"] == 0.0  # the model's 12.50 is now wrong
    assert report.to_dict()["fields"]["company"]["exact"] == 1.0
    assert export.export_labels(wh, out).to_dict()["exported"] == 1  # re-export: same files
    assert len(list((out / "labels").glob("*.json"))) == 1
    images[0].unlink()
    assert list(export.export_labels(wh, tmp_path / "again").missing_images) == [label["id"]]


def test_review_settings_are_read_and_checked(monkeypatch):
    from extractor.errors import ConfigError
    from extractor.pipeline.config import load_config, review_response_timeout_hours

    def config(**values):
        return load_config({"receipts_config": json.dumps(values)}.get)

    cfg = config(review_min_confidence=0.8, review_max_per_run=5)
    assert (cfg.review_min_confidence, cfg.review_max_per_run) == (0.8, 5)
    assert config().review_min_confidence == 0.5
    monkeypatch.setenv("RECEIPT_REVIEW_MIN_CONFIDENCE", "0.25")
    assert config().review_min_confidence == 0.25
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        config(review_min_confidence=1.5)
    with pytest.raises(ConfigError, match="whole number"):
        config(review_max_per_run="many")
    monkeypatch.setenv("RECEIPT_REVIEW_TIMEOUT_HOURS", "0")
    with pytest.raises(ConfigError, match="> 0"):
        review_response_timeout_hours()


def test_images_and_export_read_receipts_on_s3(s3_endpoint, images, wh, tmp_path):
    """Over moto's S3 server: the queue's image check, an unreadable (missing) object, and
    export-labels copying the bytes from the bucket."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="receipts")
    client.put_object(Bucket="receipts", Key="dt=2026-03-01/r1.jpg", Body=images[0].read_bytes())
    on_s3 = result(images[0], confidence={"total": 0.1}).model_copy(
        update={"source": "s3://receipts/dt=2026-03-01/r1.jpg"})
    assert readable_image(on_s3.source, on_s3.receipt_id, client) is None
    assert "cannot read" in readable_image("s3://receipts/missing.jpg", on_s3.receipt_id, client)
    wh.load(flag_low_confidence([on_s3], required_fields=REQUIRED, min_confidence=0.5), [], run())
    [item] = queue.pending_reviews(wh, limit=5, image_problem=lambda i: readable_image(
        i.source, i.receipt_id, client))[0]
    corrections.record(wh, corrections.from_response(item.to_dict(), _answer(item.to_dict(), "approve"),
                                                     run_id="rv"))
    summary = export.export_labels(wh, tmp_path / "from-s3", s3_client=client)
    assert summary.exported == [on_s3.receipt_id]
    exported = tmp_path / "from-s3" / "images" / f"{on_s3.receipt_id}.jpg"
    assert exported.read_bytes() == images[0].read_bytes()
