"""Paired check of two OCR caches of the same receipts (``bench/ocr_accuracy.py ocr``):
how many boxes read differently, and which fields the shipped parser and picker then
fill differently (in-sample: the shipped picker was trained on these receipts; the
point is the difference between the two caches, the cross-validation is the accuracy).

    python bench/ocr_cache_diff.py --a /work/scratch-ocr/cache/det1280 \\
        --b /work/scratch-ocr/cache/ocr-speed/latin --dataset ../shared/datasets/sroie-dev
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIELDS = ("store_name", "store_address", "date", "total")
LABEL_KEYS = {"store_name": "company", "store_address": "address", "date": "date", "total": "total"}


def parse(cache_file: Path, picker) -> tuple[list[str], dict]:
    from extractor.ocr.engine import OcrBox
    from extractor.ocr.layout import MIN_BOX_SCORE, rebuild_lines
    from extractor.ocr.parser import parse_receipt

    boxes = [OcrBox.from_dict(b) for b in json.loads(cache_file.read_text())["boxes"]]
    lines = rebuild_lines(boxes, min_score=MIN_BOX_SCORE)
    return [b.text for b in boxes], (parse_receipt(lines, picker=picker).values if lines else {})


def main(argv: list[str] | None = None) -> None:
    from extractor.evaluation import field_match, label_value
    from extractor.ocr.picker import load_default_picker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True)
    args = ap.parse_args(argv)
    picker = load_default_picker()
    ids = sorted(p.stem for p in args.b.glob("*.json") if not p.name.startswith("_") and (args.a / p.name).exists())
    boxes = receipts = 0
    changed = []
    for rid in ids:
        texts_a, values_a = parse(args.a / f"{rid}.json", picker)
        texts_b, values_b = parse(args.b / f"{rid}.json", picker)
        receipts += texts_a != texts_b
        boxes += sum(x != y for x, y in zip(texts_a, texts_b, strict=False)) + abs(len(texts_a) - len(texts_b))
        label = json.loads((args.dataset / "labels" / f"{rid}.json").read_text())
        for field in FIELDS:
            if str(values_a.get(field)) != str(values_b.get(field)):
                right = [field_match(LABEL_KEYS[field], v.get(field), label_value(label, LABEL_KEYS[field]))[0]
                         for v in (values_a, values_b)]
                changed.append({"id": rid, "field": field, "a": str(values_a.get(field)), "b": str(values_b.get(field)),
                                "a_exact": right[0], "b_exact": right[1]})
    print(json.dumps({"receipts": len(ids), "receipts_with_a_different_box": receipts,
                      "boxes_different_or_missing": boxes, "fields_changed": changed}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
