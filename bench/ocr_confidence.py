"""Reliability of the OCR backend's per-field confidence on a labelled set (sroie-dev).

For the four labelled fields (store name, address, date, total) it runs the real OCR
backend, scores each prediction against its label (``evaluation.field_match``: exact
after normalisation) and reports, per confidence bucket, how many predictions fall in it
and the share that is correct; then, per review threshold, the share of receipts that
``review_min_confidence`` would flag (a required field below it: store name,
date, total, as the suite's default) and the field accuracy of flagged vs not flagged.

    nice python bench/ocr_confidence.py --dataset ../shared/datasets/sroie-dev --limit 150 \\
        --output bench/results/ocr_confidence_reliability.json

docs/review.md quotes the committed result file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

BUCKETS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0001)
THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
FIELDS = {"company": "store_name", "address": "store_address", "date": "date", "total": "total"}
REQUIRED = ("store_name", "date", "total")


def score(dataset: Path, limit: int | None, cache: Path) -> list[dict]:
    """One row per receipt; rows are appended to ``cache`` (JSONL) as they come, and a rerun
    only scores receipts the cache lacks (the OCR is ~1 s of CPU per receipt, more when the
    machine is shared)."""
    from extractor.evaluation import field_match, label_value, load_labels
    from extractor.images import ReceiptInput

    done = {}
    if cache.exists():
        done = {r["id"]: r for r in map(json.loads, cache.read_text().splitlines())}
    pairs = load_labels(dataset, limit)
    todo = [(p, label) for p, label in pairs if label.get("id", p.stem) not in done]
    backend = _backend() if todo else None
    with cache.open("a") as out:
        for start in range(0, len(todo), 4):
            chunk = todo[start:start + 4]
            results = backend.extract([ReceiptInput.from_bytes(p.read_bytes(), str(p)) for p, _ in chunk])
            for (path, label), result in zip(chunk, results, strict=True):
                receipt = result.receipt
                row = {"id": label.get("id", path.stem), "fields": {}}
                for key, name in FIELDS.items():
                    value = getattr(receipt, name) if receipt is not None else None
                    confidence = receipt.confidence.get(name) if receipt is not None else None
                    row["fields"][name] = {"confidence": confidence,
                                           "correct": field_match(key, value, label_value(label, key))[0]}
                done[row["id"]] = row
                out.write(json.dumps(row) + "\n")
                out.flush()
            print(f"{len(done)}/{len(pairs)}", flush=True)
    return [done[label.get("id", p.stem)] for p, label in pairs]


def _backend():
    from extractor.backends import load_backend
    from extractor.spec import resolve_spec

    return load_backend(resolve_spec("ocr"), None)


def buckets(cells: list[dict]) -> list[dict]:
    table = []
    for low, high in zip(BUCKETS, BUCKETS[1:], strict=False):
        hits = [f for f in cells if f["confidence"] is not None and low <= f["confidence"] < high]
        correct = round(sum(f["correct"] for f in hits) / len(hits), 4) if hits else None
        label = f"[{low:g}, {min(high, 1):g}{']' if high > 1 else ')'}"
        table.append({"bucket": label, "predictions": len(hits), "share_correct": correct})
    return table


def reliability(rows: list[dict]) -> dict:
    table = buckets([f for r in rows for f in r["fields"].values()])
    by_field = {name: buckets([r["fields"][name] for r in rows]) for name in FIELDS.values()}
    routing = []
    for threshold in THRESHOLDS:
        flagged = [r for r in rows if any((r["fields"][n]["confidence"] or 0) < threshold for n in REQUIRED
                                          if r["fields"][n]["confidence"] is not None)]
        kept = [r for r in rows if r not in flagged]

        def accuracy(group: list[dict]) -> float | None:
            cells = [r["fields"][n]["correct"] for r in group for n in REQUIRED]
            return round(sum(cells) / len(cells), 4) if cells else None
        routing.append({"threshold": threshold, "flagged_share": round(len(flagged) / len(rows), 4),
                        "required_fields_correct_flagged": accuracy(flagged),
                        "required_fields_correct_not_flagged": accuracy(kept)})
    return {"buckets": table, "buckets_by_field": by_field, "routing": routing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = score(Path(args.dataset), args.limit, Path(args.output).with_suffix(".rows.jsonl"))
    out = {"dataset": args.dataset, "receipts": len(rows), "model": "ocr",
           "note": "the shipped line picker was trained on all of sroie-dev: in-sample confidence",
           "seconds_this_call": round(time.perf_counter() - t0, 1), **reliability(rows), "rows": rows}
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("receipts", "buckets", "routing")}, indent=1))


if __name__ == "__main__":
    main()
