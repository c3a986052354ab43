"""``ReceiptReviewOperator`` (plugins/receipts_review_operator.py) on its own: the form it
writes, the answer it stores in a real DuckDB warehouse on resume, the skip on timeout. The
full loop through real Airflow processes is tests/integration/test_review_loop.py."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from receipts_review_operator import ReceiptReviewOperator

ITEM = {"receipt_id": "ab" * 32, "extractor_version": "ocr:rapidocr@3:parser-v3",
        "source": "/data/dt=2026-03-01/x.jpg", "origin": "needs_review",
        "reason": "low confidence (< 0.5): total 0.12",
        "fields": {"store_name": "Kedai Maju", "date": "2026-03-01", "total": "12.50"},
        "confidence": {"total": 0.12}, "raw_text": "TOTAL {{ 12.50 }}"}


class TestReceiptReviewOperator:
    def test_the_form_is_prefilled_typed_and_offers_three_answers(self):
        op = ReceiptReviewOperator(task_id="review_receipt", review_item=ITEM)
        assert op.options == ["approve", "correct", "reject"] and op.multiple is False
        assert op.defaults is None  # a timeout must never answer for a person
        params = op.serialized_params
        assert params["total"]["value"] == 12.5 and params["total"]["schema"]["type"] == ["null", "number"]
        assert params["date"]["schema"]["format"] == "date" and params["store_name"]["value"] == "Kedai Maju"
        assert f"/receipts-review/images/{'ab' * 32})" in op.body
        assert "TOTAL {{ 12.50 }}" in op.body  # raw output shown as is

    def test_execute_complete_stores_the_answer(self, tmp_path, monkeypatch):
        url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
        monkeypatch.setenv("RECEIPT_WAREHOUSE_URL", url)
        op = ReceiptReviewOperator(task_id="review_receipt", review_item=ITEM)
        values = {k: v["value"] for k, v in op.serialized_params.items()}
        event = {"chosen_options": ["correct"], "params_input": {**values, "total": 13.5},
                 "responded_at": dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC),
                 "responded_by_user": {"id": "3", "name": "alice"}, "timedout": False}
        out = op.execute_complete({"run_id": "review-run-1"}, event)
        assert out == {"receipt_id": "ab" * 32, "decision": "correct", "corrected_fields": ["total"],
                       "reviewer": "alice"}
        from extractor.pipeline.warehouse import open_warehouse

        with open_warehouse(url) as warehouse:
            assert warehouse.fetch("SELECT decision, total, reviewer, review_run_id FROM corrections") == [
                ("correct", Decimal("13.5"), "alice", "review-run-1")]

    def test_a_timeout_skips_and_writes_nothing(self):
        from airflow.sdk.exceptions import AirflowSkipException

        op = ReceiptReviewOperator(task_id="review_receipt", review_item=ITEM)
        with pytest.raises(AirflowSkipException, match="stays in the review queue"):
            op.execute_complete({"run_id": "r"}, {"error": "timed out", "error_type": "timeout"})

    def test_template_fields(self):
        # the body quotes raw model output: Jinja must never render it
        assert ReceiptReviewOperator.template_fields == ()


def test_receipts_review_runs_on_the_receipts_asset_one_form_per_receipt(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from receipts_dag_helpers import REPO

    monkeypatch.setenv("RECEIPT_REVIEW_TIMEOUT_HOURS", "6")
    bag = DagBag(dag_folder=str(REPO / "dags" / "receipts_review.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("receipts_review")
    assets = [asset.uri for asset in dag.timetable.asset_condition.objects]
    assert assets == ["receipts_warehouse://receipts"]  # the Asset receipts_daily's report emits
    assert dag.max_active_runs == 1 and not dag.catchup
    assert set(dag.task_ids) == {"collect_review_queue", "review_receipt"}
    review = dag.get_task("review_receipt")
    # mapped over the queue; compared by name: the plugins manager may have loaded the module
    # a second time (another class object) when an earlier test started Airflow's plugins
    cls = review.operator_class
    assert (cls.__module__, cls.__qualname__) == (ReceiptReviewOperator.__module__, "ReceiptReviewOperator")
    assert review.partial_kwargs["response_timeout"] == dt.timedelta(hours=6)
    assert review.upstream_task_ids == {"collect_review_queue"}
