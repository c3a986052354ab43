"""What waits for a person: receipts loaded but flagged ``needs_review``, and quarantined
receipts whose image can still be read.

A receipt leaves the queue once it has a row in ``corrections`` (any extractor version: the
answer is about the receipt, whatever model read it). A form nobody answers writes nothing,
so its receipt is offered again by the next ``receipts_review`` run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from extractor.schema import scalar_fields

log = logging.getLogger(__name__)

RAW_TEXT_LIMIT = 4000  # characters of raw model output shown in the form (XCom stays small)
FIELDS = scalar_fields()


@dataclass
class ReviewItem:
    """One receipt to review, JSON-safe (it travels by XCom to its mapped form task)."""

    receipt_id: str
    extractor_version: str
    source: str
    origin: str  # "needs_review" (loaded, low confidence) or "quarantine"
    reason: str
    fields: dict[str, Any] = field(default_factory=dict)  # the model's values, JSON-safe
    confidence: dict[str, float] = field(default_factory=dict)
    raw_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def json_safe(value: Any) -> Any:
    """JSON-safe; money as printed on receipts ('12.75', not the column's '12.7500')."""
    if isinstance(value, Decimal):
        cents = value.quantize(Decimal("0.01"))
        return format(cents if cents == value else value.normalize(), "f")
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def _loads(text: Any) -> Any:
    if text is None or isinstance(text, (dict, list)):
        return text
    return json.loads(text)


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= RAW_TEXT_LIMIT:
        return text
    return text[:RAW_TEXT_LIMIT] + f"\n... ({len(text) - RAW_TEXT_LIMIT} more characters)"


def flagged_receipts(warehouse: Any) -> list[ReviewItem]:
    """Current rows flagged ``needs_review`` that nobody answered yet, oldest first."""
    cols = ", ".join(f'"{n}"' for n in FIELDS)
    rows = warehouse.fetch(
        f'SELECT "receipt_id", "extractor_version", "source", "review_reason", "confidence", '
        f'"raw_text", {cols} FROM "receipts_current" WHERE "needs_review" IS TRUE '
        f'AND "review_decision" IS NULL ORDER BY "loaded_at", "receipt_id"')
    return [ReviewItem(receipt_id=r[0], extractor_version=r[1], source=r[2], origin="needs_review",
                       reason=r[3] or "needs review", confidence=_loads(r[4]) or {},
                       raw_text=_clip(r[5]),
                       fields={n: json_safe(v) for n, v in zip(FIELDS, r[6:], strict=True)})
            for r in rows]


def quarantined_receipts(warehouse: Any) -> list[ReviewItem]:
    """Quarantined receipts that no extractor version loaded and nobody answered yet (the
    latest quarantine row per receipt), oldest first."""
    rows = warehouse.fetch(
        'SELECT q."receipt_id", q."extractor_version", q."source", q."reason", q."receipt", '
        'q."raw_text", q."quarantined_at" FROM "quarantine" q '
        'WHERE NOT EXISTS (SELECT 1 FROM "receipts" r WHERE r."receipt_id" = q."receipt_id") '
        'AND NOT EXISTS (SELECT 1 FROM "corrections" c WHERE c."receipt_id" = q."receipt_id") '
        'ORDER BY q."quarantined_at", q."receipt_id", q."extractor_version"')
    latest: dict[str, ReviewItem] = {}
    for receipt_id, version, source, reason, receipt, raw_text, _ in rows:
        values = _loads(receipt) or {}
        latest.pop(receipt_id, None)  # re-insert: the dict stays ordered by the latest row
        latest[receipt_id] = ReviewItem(
            receipt_id=receipt_id, extractor_version=version, source=source, origin="quarantine",
            reason=reason, fields={n: values.get(n) for n in FIELDS},
            confidence=values.get("confidence") or {}, raw_text=_clip(raw_text))
    return list(latest.values())


def pending_reviews(warehouse: Any, *, limit: int, image_problem: Callable[[ReviewItem], str | None]
                    ) -> tuple[list[ReviewItem], dict[str, str]]:
    """Up to ``limit`` items (flagged receipts first), and the receipts left out because their
    image cannot be shown (id -> reason). ``image_problem(item)`` returns None when the image
    reads and decodes. Quarantined for a bad image at extraction: left out without a read."""
    chosen: list[ReviewItem] = []
    unreadable: dict[str, str] = {}
    for item in [*flagged_receipts(warehouse), *quarantined_receipts(warehouse)]:
        if len(chosen) >= limit:
            break
        if item.origin == "quarantine" and item.reason.startswith("bad image"):
            unreadable[item.receipt_id] = item.reason
            continue
        problem = image_problem(item)
        if problem is not None:
            unreadable[item.receipt_id] = problem
            continue
        chosen.append(item)
    log.info("review queue: %d to review, %d left out (image cannot be shown)",
             len(chosen), len(unreadable))
    return chosen, unreadable
