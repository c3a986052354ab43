"""A reviewer's answer -> one ``corrections`` row.

The stored decision says what happened to the values: "approve" with edited fields is
stored as "correct", "correct" with nothing edited as "approve"; "reject" keeps the model's
values and marks the receipt. Values are normalised by the ``Receipt`` model, exactly as
model output is, so "12,50" and 12.5 are the same correction. Rows are keyed by (receipt
id, extractor version): answering again replaces the answer, never adds a second one.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extractor.errors import ExtractorError
from extractor.pipeline.warehouse import ddl
from extractor.schema import Receipt, scalar_fields

log = logging.getLogger(__name__)


class InvalidReview(ExtractorError):
    """An answer that cannot be stored (unknown option, a value that is not its type)."""


@dataclass
class Correction:
    receipt_id: str
    extractor_version: str
    decision: str
    values: dict[str, Any]  # every scalar field, typed (Decimal, date ...)
    corrected_fields: list[str] = field(default_factory=list)
    reviewer: str | None = None
    reviewed_at: dt.datetime | None = None
    review_reason: str | None = None
    source: str = ""
    review_run_id: str = ""

    def row(self) -> tuple:
        from extractor.pipeline.warehouse.base import to_json, utc_naive

        values = dict(self.values, receipt_id=self.receipt_id,
                      extractor_version=self.extractor_version, decision=self.decision,
                      corrected_fields=to_json(self.corrected_fields), reviewer=self.reviewer,
                      reviewed_at=utc_naive(self.reviewed_at), review_reason=self.review_reason,
                      source=self.source, review_run_id=self.review_run_id)
        return tuple(values[c] for c in ddl.CORRECTIONS.column_names)


def _typed(values: Mapping[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    try:
        receipt = Receipt.model_validate({n: values.get(n) for n in scalar_fields()})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidReview(f"the submitted fields do not validate: {problems}") from None
    return {n: getattr(receipt, n) for n in scalar_fields()}


def _reviewer(user: Any) -> str | None:
    if isinstance(user, Mapping):
        return user.get("name") or user.get("id")
    return None if user is None else str(user)


def from_response(item: Mapping[str, Any], response: Mapping[str, Any], *, run_id: str) -> Correction:
    """Build the correction from a review item and the form's response (the operator's
    result: ``chosen_options``, ``params_input``, ``responded_by_user``, ``responded_at``)."""
    chosen = list(response.get("chosen_options") or [])
    if len(chosen) != 1 or chosen[0] not in ddl.REVIEW_DECISIONS:
        raise InvalidReview(f"expected one of {ddl.REVIEW_DECISIONS}, got {chosen}")
    model = _typed(item["fields"])
    decision = chosen[0]
    submitted = model if decision == "reject" else _typed(response.get("params_input") or {})
    changed = sorted(n for n in scalar_fields() if submitted[n] != model[n])
    if decision == "approve" and changed:
        log.info("receipt %s: approved with edits to %s, stored as a correction",
                 item["receipt_id"], changed)
        decision = "correct"
    elif decision == "correct" and not changed:
        decision = "approve"
    responded_at = response.get("responded_at")
    if isinstance(responded_at, str):
        responded_at = dt.datetime.fromisoformat(responded_at)
    return Correction(
        receipt_id=item["receipt_id"], extractor_version=item["extractor_version"],
        decision=decision, values=submitted, corrected_fields=changed,
        reviewer=_reviewer(response.get("responded_by_user")),
        reviewed_at=responded_at or dt.datetime.now(dt.UTC),
        review_reason=item.get("reason"), source=item["source"], review_run_id=run_id)


def record(warehouse: Any, correction: Correction) -> None:
    """Write (or replace) the correction row; the model's rows are left as they are."""
    warehouse.replace_rows(ddl.CORRECTIONS, [correction.row()])
    log.info("review of %s (%s): %s by %s, changed %s", correction.receipt_id,
             correction.extractor_version, correction.decision, correction.reviewer,
             correction.corrected_fields or "nothing")
