"""The bodies of the ``receipts_review`` tasks (Airflow imported inside the functions).

``collect_review_queue`` picks the receipts to review; each mapped review form calls
``record_review`` with its answer. A form nobody answers before its timeout writes
nothing, so its receipt is offered again by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from extractor.pipeline import tasks as pipeline_tasks

log = logging.getLogger(__name__)


def collect_review_queue() -> list[dict[str, Any]]:
    """The review items of this run (at most ``review_max_per_run``), as dicts."""
    from extractor.pipeline.review.images import readable_image
    from extractor.pipeline.review.queue import pending_reviews

    cfg = pipeline_tasks.load_config()
    warehouse = pipeline_tasks.open_warehouse(cfg)
    clients: dict[str, Any] = {}

    def image_problem(item) -> str | None:
        if item.source.startswith("s3://") and "s3" not in clients:
            clients["s3"] = pipeline_tasks.s3_client(cfg)
        return readable_image(item.source, item.receipt_id, clients.get("s3"))

    try:
        items, unreadable = pending_reviews(warehouse, limit=cfg.review_max_per_run,
                                            image_problem=image_problem)
    finally:
        warehouse.close()
    for receipt_id, reason in unreadable.items():
        log.warning("not reviewable, image cannot be shown: %s: %s", receipt_id, reason)
    return [item.to_dict() for item in items]


def record_review(item: Mapping[str, Any], response: Mapping[str, Any], *, run_id: str) -> dict[str, Any]:
    """Store one answer in ``corrections``; returns a small summary (the task's XCom)."""
    from extractor.pipeline.review import corrections

    try:
        correction = corrections.from_response(item, response, run_id=run_id)
    except corrections.InvalidReview as exc:  # retrying cannot fix an answer
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"review of {item['receipt_id']} cannot be stored: {exc}") from exc
    cfg = pipeline_tasks.load_config()
    warehouse = pipeline_tasks.open_warehouse(cfg)
    try:
        corrections.record(warehouse, correction)
    finally:
        warehouse.close()
    return {"receipt_id": correction.receipt_id, "decision": correction.decision,
            "corrected_fields": correction.corrected_fields, "reviewer": correction.reviewer}
