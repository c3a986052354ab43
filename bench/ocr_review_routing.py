"""How well the OCR reader's per-field confidence routes its mistakes to review.

The pipeline loads a valid receipt but flags it ``needs_review`` when a required field's
confidence is below ``review_min_confidence`` (0.5 by default; docs/review.md). Whether that
catches the reader's mistakes is a property of the confidences on receipts the picker never
saw, so this reads the out-of-fold rows of an accuracy report (``bench/ocr_accuracy.py
table --report``, whose rows carry each field's confidence) and prints, per field and per
receipt, how many wrong values fall below the threshold (caught) and how many right ones do
(sent to a person for nothing), and the share right per confidence bucket.

    python bench/ocr_review_routing.py bench/results/ocr_accuracy.json \\
        [--protocol "cv, unseen stores"] [--min-confidence 0.5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REQUIRED = ("company", "date", "total")  # store_name, date, total: the pipeline's required fields
BUCKETS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0001)


def field_table(rows: list[dict], key: str, threshold: float, match: str) -> dict:
    scored = [r[key] for r in rows if r[key].get("confidence") is not None]
    wrong = [f for f in scored if not f[match]]
    right = [f for f in scored if f[match]]
    buckets = []
    for lo, hi in zip(BUCKETS, BUCKETS[1:], strict=False):
        inside = [f for f in scored if lo <= f["confidence"] < hi]
        buckets.append({"bucket": f"[{lo:g}, {min(hi, 1):g}{']' if hi > 1 else ')'}", "values": len(inside),
                        "share_right": round(sum(f[match] for f in inside) / len(inside), 4) if inside else None})
    return {"values": len(scored), "wrong": len(wrong),
            "wrong_caught": sum(f["confidence"] < threshold for f in wrong),
            "right_flagged": sum(f["confidence"] < threshold for f in right), "buckets": buckets}


def receipt_table(rows: list[dict], threshold: float, match: str) -> dict:
    def flagged(r):
        return any(r[k].get("confidence", 1.0) < threshold for k in REQUIRED)

    def wrong(r):
        return any(not r[k][match] for k in REQUIRED)

    return {"receipts": len(rows), "with_a_wrong_required_field": sum(map(wrong, rows)),
            "of_those_flagged": sum(wrong(r) and flagged(r) for r in rows),
            "all_right_but_flagged": sum(flagged(r) and not wrong(r) for r in rows)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--protocol", default="cv, unseen stores", help="which report of the file (its top-level key)")
    ap.add_argument("--min-confidence", type=float, default=0.5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = json.loads(args.report.read_text())[args.protocol]["rows"]
    if not any(r["company"].get("confidence") is not None for r in rows):
        raise SystemExit(f"{args.report} has no confidences in its rows (made before they were recorded)")
    out = {"report": str(args.report), "protocol": args.protocol, "min_confidence": args.min_confidence}
    for match in ("exact", "near"):
        out[f"wrong = not {match}"] = {
            "receipts": receipt_table(rows, args.min_confidence, match),
            "fields": {k: field_table(rows, k, args.min_confidence, match) for k in ("company", "address", "date",
                                                                                    "total")}}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
