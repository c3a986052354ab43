"""Routing by confidence: a valid receipt whose required fields are not all confidently
read is loaded, but flagged ``needs_review`` so a person checks it (``receipts_review``).

Works for any backend that fills ``Receipt.confidence`` (the OCR reader does, per field). A
field the backend gives no confidence for is not judged: a backend without confidence never
flags. A required field that is missing altogether is the expectation suite's business (it
quarantines the receipt), not this module's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from extractor.schema import ExtractionResult


def low_confidence_fields(result: ExtractionResult, fields: Iterable[str],
                          min_confidence: float) -> dict[str, float]:
    """The given fields whose confidence is below ``min_confidence`` (name -> confidence)."""
    confidence = result.receipt.confidence if result.receipt is not None else {}
    return {name: confidence[name] for name in fields
            if name in confidence and confidence[name] < min_confidence}


def flag_low_confidence(results: Sequence[ExtractionResult], *, required_fields: Iterable[str],
                        min_confidence: float) -> list[ExtractionResult]:
    """Copies of ``results`` with ``review_reason`` set where a required field's confidence is
    below ``min_confidence`` (0 turns routing off); the others are returned unchanged."""
    fields = tuple(required_fields)
    out = []
    for result in results:
        low = low_confidence_fields(result, fields, min_confidence) if min_confidence > 0 else {}
        if low:
            listed = ", ".join(f"{name} {value:.3f}" for name, value in sorted(low.items()))
            result = result.model_copy(update={
                "review_reason": f"low confidence (< {min_confidence:g}): {listed}"})
        out.append(result)
    return out
