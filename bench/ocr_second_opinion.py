"""What the OCR second opinion costs: CPU per receipt with and without it, on cached OCR.

For each receipt of the cache (the boxes of ``bench/ocr_accuracy.py ocr``), the shipped
picker parses the lines once without and once with the second opinion (the re-reads are
made from the image, not cached), and the process CPU time of each is recorded, with how
many receipts and boxes were re-read:

    nice python bench/ocr_second_opinion.py --dataset ../shared/datasets/sroie-dev \\
        --cache /work/scratch-ocr/cache/det1280 --limit 120 --kinds rapid,tesseract \\
        --json bench/results/ocr_second_opinion_cost.json

The OCR itself (detection and recognition of every box, ~1.9 CPU-s per receipt on the
development machine, docs/ocr.md) is not included: the numbers are what the second
opinion adds on top of it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the tesseract program)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(examples, picker, dataset: Path, kind: str, engine) -> dict:
    from PIL import Image

    from extractor.ocr import second_opinion as so
    from extractor.ocr.parser import parse_receipt

    settings = so.SecondOpinionSettings()
    base = reread = 0.0
    reread_receipts = boxes = changed = 0
    for ex in examples:
        t0 = _cpu()
        first = parse_receipt(ex.lines, picker=picker).values
        t1 = _cpu()
        image = Image.open(dataset / "images" / f"{ex.receipt_id}.jpg").convert("RGB")
        t2 = _cpu()  # decoding is the backend's anyway: not counted
        read = so.tesseract_reader(image, settings.margin) if kind == "tesseract" else \
            so.rapid_reader(engine, image, settings.margin)
        seen: list[int] = []

        def counting(bxs, read=read, seen=seen):
            seen.append(len(bxs))
            return read(bxs)

        second = parse_receipt(ex.lines, picker=picker, reader=counting, second_opinion=settings).values
        t3 = _cpu()
        base += t1 - t0
        reread += t3 - t2
        reread_receipts += bool(seen)
        boxes += sum(seen)
        changed += any(first.get(k) != second.get(k) for k in ("store_name", "store_address"))
    n = len(examples)
    return {"kind": kind, "receipts": n, "receipts_reread": reread_receipts, "boxes_reread": boxes,
            "receipts_changed": changed, "parse_cpu_s_per_receipt": round(base / n, 4),
            "parse_with_second_opinion_cpu_s_per_receipt": round(reread / n, 4),
            "added_cpu_s_per_receipt": round((reread - base) / n, 4),
            "added_cpu_s_per_reread_receipt": round((reread - base) / max(reread_receipts, 1), 4)}


def main(argv: list[str] | None = None) -> None:
    from extractor.ocr.engine import build_engine
    from extractor.ocr.picker import load_default_picker
    from extractor.ocr.second_opinion import tesseract_available
    from extractor.ocr.train_picker import load_examples

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=120, help="receipts, spread over the set")
    ap.add_argument("--kinds", default="rapid,tesseract")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    examples = load_examples(args.cache, args.dataset)
    examples = examples[::max(1, len(examples) // args.limit)][:args.limit]
    picker, engine = load_default_picker(), build_engine()
    results = []
    for kind in args.kinds.split(","):
        if kind == "tesseract" and not tesseract_available():
            print("tesseract is not installed: skipped")
            continue
        results.append(measure(examples, picker, args.dataset, kind, engine))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cache": str(args.cache), "results": results}, indent=1))


if __name__ == "__main__":
    main()
