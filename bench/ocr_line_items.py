"""Line items of the ``ocr`` backend: how often they are found and how often they are right.

Two measurements, written to ``bench/results/ocr_line_items.json``:

1. synthetic receipts (``extractor.testing.synthetic``, known items) read end to end by
   the backend (real RapidOCR): share with items, share whose items equal the truth
   (same count, same line totals, quantities and unit prices, names near the truth);
2. sroie-dev from the OCR cache (no item labels there): share of receipts with items,
   and share whose items sum to the extracted total (the rest sum to the subtotal or
   to the total less tax).

    python bench/ocr_line_items.py --dataset ../shared/datasets/sroie-dev \\
        --cache /work/scratch-ocr/cache/det1280 --synthetic 30
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ocr_line_items.json"


def _same(items, truth) -> bool:
    from extractor.evaluation import similarity

    if len(items) != len(truth):
        return False
    return all(i.line_total == Decimal(t["line_total"]) and i.quantity == Decimal(t["quantity"])
               and i.unit_price == Decimal(t["unit_price"]) and similarity(i.name, t["name"]) >= 0.9
               for i, t in zip(items, truth, strict=True))


def synthetic(n: int) -> dict:
    from extractor.backends.ocr import OCRBackend
    from extractor.images import ReceiptInput
    from extractor.spec import resolve_spec
    from extractor.testing.synthetic import render_receipt

    backend = OCRBackend(resolve_spec("ocr"))
    found = right = 0
    try:
        for seed in range(n):
            data, truth = render_receipt(1000 + seed)
            [result] = backend.extract([ReceiptInput.from_bytes(data, f"synthetic-{seed}")])
            items = result.receipt.line_items if result.receipt else []
            found += bool(items)
            right += _same(items, truth["line_items"])
    finally:
        backend.close()
    return {"receipts": n, "with_items": round(found / n, 4), "items_equal_truth": round(right / n, 4)}


def sroie(dataset: Path, cache: Path) -> dict:
    from extractor.ocr.parser import parse_receipt
    from extractor.ocr.picker import load_default_picker
    from extractor.ocr.train_picker import load_examples

    picker = load_default_picker()
    examples = load_examples(cache, dataset)
    with_items = to_total = 0
    for ex in examples:
        values = parse_receipt(ex.lines, picker=picker).values
        items = values.get("line_items") or []
        with_items += bool(items)
        total = values.get("total")
        to_total += bool(items) and total is not None and abs(
            sum((i["line_total"] for i in items), Decimal(0)) - total) <= Decimal("0.02")
    n = len(examples)
    return {"receipts": n, "with_items": round(with_items / n, 4), "items_sum_to_total": round(to_total / n, 4)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--synthetic", type=int, default=30)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    report = {"synthetic": synthetic(args.synthetic) if args.synthetic else None,
              "sroie_dev_cached_ocr": sroie(args.dataset, args.cache) if args.dataset and args.cache else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
