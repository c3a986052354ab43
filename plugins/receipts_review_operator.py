"""``ReceiptReviewOperator``: one receipt's review form (Airflow 3 human-in-the-loop).

Mapped over the review queue (``.partial(...).expand(review_item=...)``): each mapped task
opens a form prefilled with the model's fields (typed params: Airflow's form validates
them), a body with the reason, the confidence per field, the raw output and the receipt's
image (served by the ``receipts_review`` plugin endpoint), and the options approve /
correct / reject. The answer is written to ``corrections`` when the task resumes. No
answer before ``response_timeout``: the task is skipped and writes nothing, so the receipt
stays in the queue for the next run.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowSkipException


def _base_path() -> str:
    """The path Airflow is served under (``[api] base_url``), so image links resolve."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class ReceiptReviewOperator(HITLOperator):
    # The body quotes raw model output: it must never be rendered as a Jinja template.
    template_fields = ()

    def __init__(self, *, review_item: dict[str, Any], **kwargs: Any) -> None:
        from extractor.pipeline.review import form

        self.review_item = review_item
        params = {name: Param(spec.pop("default"), **spec)
                  for name, spec in form.field_params(review_item).items()}
        super().__init__(subject=form.subject(review_item),
                         body=form.body(review_item, base_path=_base_path()),
                         options=list(form.OPTIONS), multiple=False, params=params, **kwargs)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from extractor.pipeline.review.tasks import record_review

        response = super().execute_complete(context=context, event=event)
        return record_review(self.review_item, response, run_id=context["run_id"])

    def process_trigger_event_error(self, event: dict[str, Any]) -> None:
        if event.get("error_type") == "timeout":
            raise AirflowSkipException(
                f"no answer for receipt {self.review_item['receipt_id']} within the response "
                "timeout: it stays in the review queue for the next receipts_review run")
        super().process_trigger_event_error(event)
