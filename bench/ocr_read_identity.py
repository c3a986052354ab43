"""Does ``build_engine`` read exactly what RapidOCR as shipped reads? Box by box, on real receipts.

The reference is RapidOCR built from the same ``OcrSettings.params()`` with its own sessions
(memory patterns on, the recogniser's full [batch, steps, classes] output decoded in numpy),
which is what ``build_engine`` did before issue 12's memory work. Every box's corner points,
text and unrounded score are compared; one engine at a time, one thread, so it is slow
(~2 x 2 CPU-s per receipt):

    nice python bench/ocr_read_identity.py --dataset DIR --every 25 [--rec-head latin] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def read(engine, image) -> list[tuple[list, str, float]]:
    out = engine(image)
    if getattr(out, "boxes", None) is None or getattr(out, "txts", None) is None:
        return []
    return [(box.tolist(), str(text), float(score))
            for box, text, score in zip(out.boxes, out.txts, out.scores, strict=True)]


def main(argv: list[str] | None = None) -> None:
    from rapidocr import RapidOCR

    from extractor.images import decode_image
    from extractor.ocr.engine import OcrSettings, build_engine
    from extractor.ocr.rec_model import derive_rec_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--every", type=int, default=25, help="every Nth image of DATASET/images, name order")
    ap.add_argument("--rec-head", choices=["full", "latin"], default=OcrSettings().rec_head)
    ap.add_argument("--json", type=Path, help="write the per-receipt comparison here")
    args = ap.parse_args(argv)
    settings = OcrSettings(rec_head=args.rec_head)
    params = settings.params()
    rec_path = derive_rec_model(settings.rec_head)
    if rec_path is not None:
        params["Rec.model_path"] = str(rec_path)
    reference = RapidOCR(params=params)
    ours = build_engine(settings)
    images = sorted((args.dataset / "images").glob("*.jpg"))[::args.every]
    rows, worst, cpu = [], 0.0, {"reference": 0.0, "ours": 0.0}
    for path in images:
        image = decode_image(path.read_bytes())
        got = {}
        for name, engine in (("reference", reference), ("ours", ours)):
            t0 = time.process_time()
            got[name] = read(engine, image)
            cpu[name] += time.process_time() - t0
        a, b = got["reference"], got["ours"]
        same_boxes = len(a) == len(b) and all(x[0] == y[0] for x, y in zip(a, b, strict=False))
        same_text = len(a) == len(b) and all(x[1] == y[1] for x, y in zip(a, b, strict=False))
        diff = max((abs(x[2] - y[2]) for x, y in zip(a, b, strict=False)), default=0.0)
        worst = max(worst, diff)
        rows.append({"image": path.name, "boxes": len(a), "same_points": same_boxes, "same_text": same_text,
                     "max_score_diff": diff})
        print(json.dumps(rows[-1]), flush=True)
    summary = {"rec_head": args.rec_head, "decoder": type(ours.text_rec.postprocess_op).__name__,
               "receipts": len(rows), "boxes": sum(r["boxes"] for r in rows),
               "receipts_identical_text_and_points": sum(r["same_text"] and r["same_points"] for r in rows),
               "max_score_diff": worst,
               "cpu_s_per_receipt": {k: round(v / max(len(rows), 1), 3) for k, v in cpu.items()}}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
