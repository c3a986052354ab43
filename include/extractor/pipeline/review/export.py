"""Reviewed receipts -> a labelled dataset in the ``eval`` format (the sroie-dev layout).

``images/<receipt id><ext>`` holds the receipt's bytes as they arrived; ``labels/<receipt
id>.json`` holds the four keys ``eval`` scores (``company``, ``date``, ``address``,
``total``, plus ``date_iso`` / ``total_decimal``) from the reviewer's values, and every
reviewed field under ``fields``. Approved and corrected receipts are exported (the latest
answer per receipt); rejected ones are not (a rejection says the image is not a usable
receipt). Re-exporting into the same folder rewrites the same files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extractor.pipeline.review.images import ImageUnavailable, image_format, read_image
from extractor.pipeline.review.queue import json_safe
from extractor.schema import scalar_fields

log = logging.getLogger(__name__)
FIELDS = scalar_fields()


@dataclass
class ExportSummary:
    exported: list[str] = field(default_factory=list)
    rejected: int = 0
    missing_images: dict[str, str] = field(default_factory=dict)  # receipt id -> reason

    def to_dict(self) -> dict[str, Any]:
        return {"exported": len(self.exported), "rejected_not_exported": self.rejected,
                "missing_images": self.missing_images}


def latest_answers(warehouse: Any) -> list[dict[str, Any]]:
    """The latest review answer per receipt, as dicts, ordered by receipt id."""
    cols = ["receipt_id", "extractor_version", "decision", *FIELDS, "corrected_fields",
            "reviewer", "reviewed_at", "source"]
    rows = warehouse.fetch("SELECT " + ", ".join(f'"{c}"' for c in cols) + ' FROM "corrections" '
                           'ORDER BY "receipt_id", "reviewed_at", "extractor_version"')
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row[0]] = dict(zip(cols, row, strict=True))
    return [latest[k] for k in sorted(latest)]


def label_of(answer: dict[str, Any], image_name: str) -> dict[str, Any]:
    values = {n: json_safe(answer[n]) for n in FIELDS}
    corrected = answer["corrected_fields"]
    return {
        "id": answer["receipt_id"], "image": f"images/{image_name}",
        "company": values["store_name"] or "", "date": values["date"] or "",
        "address": values["store_address"] or "", "total": values["total"] or "",
        "date_iso": values["date"] or "", "total_decimal": values["total"] or "",
        "flags": [f"reviewed_{answer['decision']}"],
        "fields": values,
        "review": {"decision": answer["decision"], "reviewer": answer["reviewer"],
                   "reviewed_at": json_safe(answer["reviewed_at"]),
                   "extractor_version": answer["extractor_version"],
                   "corrected_fields": json.loads(corrected) if isinstance(corrected, str) else corrected,
                   "source": answer["source"]},
    }


def export_labels(warehouse: Any, output_dir: str | Path, *, s3_client: Any = None) -> ExportSummary:
    """Write every approved / corrected receipt whose image can still be read."""
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    summary = ExportSummary()
    for answer in latest_answers(warehouse):
        if answer["decision"] == "reject":
            summary.rejected += 1
            continue
        receipt_id = answer["receipt_id"]
        try:
            data = read_image(answer["source"], receipt_id, s3_client)
            extension, _ = image_format(data)
        except ImageUnavailable as exc:
            summary.missing_images[receipt_id] = str(exc)
            log.warning("receipt %s not exported: %s", receipt_id, exc)
            continue
        image_name = receipt_id + extension
        (out / "images" / image_name).write_bytes(data)
        label = label_of(answer, image_name)
        (out / "labels" / f"{receipt_id}.json").write_text(
            json.dumps(label, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        summary.exported.append(receipt_id)
    return summary
