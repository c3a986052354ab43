"""How much recogniser input a page's boxes make, as RapidOCR batches them and as alternatives would.

The recogniser's CPU grows with the width of what it reads: every box is resized to 48 px high,
and RapidOCR reads them ``rec_batch_num`` (6) at a time, sorted by width, each batch padded to
max(``rec_min_width``, its widest box). This counts, from an OCR cache's box corners (no OCR run),
the padded width per receipt today, with a minimum width of 160, and if short boxes were packed
side by side into shared inputs with a 16 px gap (not built: an estimate of what packing could save):

    python bench/ocr_rec_width.py --cache /work/scratch-ocr/cache/prod [--limit 200]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def widths(boxes: list[dict]) -> list[float]:
    out = []
    for b in boxes:
        p = b["points"]
        w, h = math.dist(p[0], p[1]), math.dist(p[0], p[3])
        if h >= 1:
            out.append(48 * w / h)
    return sorted(out)


def padded(ws: list[float], min_width: int, batch: int = 6) -> float:
    return sum(len(ws[i:i + batch]) * max(min_width, max(ws[i:i + batch])) for i in range(0, len(ws), batch))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=200)
    args = ap.parse_args(argv)
    pages = [widths(json.loads(f.read_text())["boxes"]) for f in sorted(args.cache.glob("*.json"))
             if not f.name.startswith("_")][:args.limit]
    n = len(pages)
    now = sum(padded(ws, 320) for ws in pages) / n
    w160 = sum(padded(ws, 160) for ws in pages) / n
    packed = sum(sum(w + 16 for w in ws) for ws in pages) / n
    print(json.dumps({"receipts": n, "boxes_per_receipt": round(sum(map(len, pages)) / n, 1),
                      "input_width_per_receipt": {"shipped (min 320, batches of 6)": round(now),
                                                  "min width 160": round(w160), "packed, 16 px gaps": round(packed)},
                      "relative_to_shipped": {"min width 160": round(w160 / now, 3),
                                              "packed, 16 px gaps": round(packed / now, 3)}}, indent=1))


if __name__ == "__main__":
    main()
