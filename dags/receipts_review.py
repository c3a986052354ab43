"""
### receipts_review: people check what the model was unsure of, in Airflow

Runs whenever `receipts_daily` updates the warehouse (the receipts Asset). It collects the
receipts that wait for a person: loaded but flagged `needs_review` (a required field read
with confidence below `review_min_confidence` in `receipts_config`) and quarantined receipts whose
image can still be read, at most `review_max_per_run`. Each becomes one mapped
`review_receipt` task: a human-in-the-loop form (Browse -> Required Actions) prefilled with
the extracted fields, showing the reason, the confidence per field, the raw model output
and the image (served by the `receipts_review` plugin). Answers: **approve**, **correct**
(after editing the fields), **reject**.

**Idempotent.** Each answer replaces the `corrections` row of its (receipt id, extractor
version); the model's rows are never changed; `receipts_current` shows the reviewer's
values. A form unanswered for `RECEIPT_REVIEW_TIMEOUT_HOURS` is skipped and writes nothing:
the receipt is offered again by the next run. See docs/review.md.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, dag, task
from receipts_review_operator import ReceiptReviewOperator

from extractor.pipeline.config import RECEIPTS_ASSET_URI, review_response_timeout_hours
from extractor.pipeline.review import tasks


@dag(
    dag_id="receipts_review",
    schedule=[Asset(RECEIPTS_ASSET_URI)],  # after every receipts_daily run that loaded
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False, max_active_runs=1, doc_md=__doc__, tags=["receipts", "review"],
)
def receipts_review():
    @task
    def collect_review_queue() -> list:
        return tasks.collect_review_queue()

    ReceiptReviewOperator.partial(
        task_id="review_receipt",
        response_timeout=dt.timedelta(hours=review_response_timeout_hours()),
        map_index_template="{{ task.review_item['receipt_id'][:12] }}",
    ).expand(review_item=collect_review_queue())


receipts_review()
