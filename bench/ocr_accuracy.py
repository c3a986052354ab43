"""OCR backend accuracy on a labelled receipt set (sroie-dev), in two steps.

1. ``ocr``: run RapidOCR once over every image with the backend's settings and cache
   the raw boxes (JSON per image). This is the slow part (~1 s of CPU per receipt);
   it is resumable and never repeats an image already cached.

       nice python bench/ocr_accuracy.py ocr --dataset ../shared/datasets/sroie-dev \\
           --cache /work/scratch-ocr/cache/prod

2. ``table``: parse the cached OCR with the naive rules and the learned picker and
   print the accuracy table: k-fold cross-validation (the headline) and in-sample;
   ``--out`` also writes the picker trained on all receipts (the shipped weights).

       python bench/ocr_accuracy.py table --dataset ../shared/datasets/sroie-dev \\
           --cache /work/scratch-ocr/cache/prod --folds 5 \\
           --store-cv --out include/extractor/ocr/picker_weights.json   (report: bench/results/ocr_accuracy.json)

The numbers in docs/ocr.md come from these two commands.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path


def build_cache(dataset: Path, cache: Path, *, limit: int | None, workers: int, settings) -> None:
    from extractor.images import decode_image
    from extractor.ocr.engine import build_engine, run_ocr

    cache.mkdir(parents=True, exist_ok=True)
    meta = cache / "_settings.json"
    # threads and memory arena change the speed, not the text: only these must agree
    output_keys = ("limit_side_len", "limit_type", "use_cls", "text_score", "rec_min_width", "rec_head")
    if meta.exists():
        cached = {"rec_head": "full", **json.loads(meta.read_text())}  # caches before rec_head ran the full head
        if any(cached.get(k) != asdict(settings)[k] for k in output_keys):
            sys.exit(f"{cache} holds OCR made with other settings: {meta.read_text()}")
    else:
        meta.write_text(json.dumps(asdict(settings)))
    images = sorted((dataset / "images").glob("*.jpg"))[:limit]
    todo = [p for p in images if not (cache / f"{p.stem}.json").exists()]
    print(f"{len(images) - len(todo)} cached, {len(todo)} to OCR", flush=True)
    engine = build_engine(settings)

    def one(path: Path) -> float:
        image = decode_image(path.read_bytes())
        t0 = time.perf_counter()
        boxes = run_ocr(engine, image)
        seconds = time.perf_counter() - t0
        tmp = cache / f"{path.stem}.json.tmp"
        tmp.write_text(json.dumps({"id": path.stem, "width": image.width, "height": image.height,
                                   "seconds": seconds, "boxes": [b.to_dict() for b in boxes]}))
        tmp.rename(cache / f"{path.stem}.json")  # a killed run never leaves half a file
        return seconds

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for i, _ in enumerate(pool.map(one, todo), 1):
            if i % 25 == 0 or i == len(todo):
                print(f"{i}/{len(todo)} {(time.perf_counter() - t0) / i:.2f} s/receipt", flush=True)


def main(argv: list[str] | None = None) -> None:
    from extractor.ocr.engine import OcrSettings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ocr = sub.add_parser("ocr", help="OCR every image once into the cache")
    ocr.add_argument("--limit", type=int)
    ocr.add_argument("--workers", type=int, default=2)
    ocr.add_argument("--limit-side-len", type=int, help="override the detector size (experiments)")
    ocr.add_argument("--limit-type", choices=["min", "max"])
    ocr.add_argument("--rec-head", choices=["full", "latin"], help="override the recogniser head (experiments)")
    ocr.add_argument("--rec-min-width", type=int, help="override the recogniser's minimum input width (experiments)")
    table = sub.add_parser("table", help="print the accuracy table from the cache")
    table.add_argument("--folds", type=int, default=5)
    table.add_argument("--out", type=Path)
    table.add_argument("--report", type=Path,
                       default=Path(__file__).resolve().parent / "results" / "ocr_accuracy.json",
                       help="where the accuracy report goes (default: bench/results/ocr_accuracy.json)")
    table.add_argument("--store-cv", action="store_true", help="add the unseen-stores cross-validation row")
    table.add_argument("--second-opinion", choices=["off", "rapid", "tesseract"], default="rapid",
                       help="re-read doubtful names and addresses (needs the images; re-reads are cached)")
    table.add_argument("--reread-cache", type=Path, help="default: CACHE-reread-KIND beside --cache")
    table.add_argument("--limit", type=int, help="only the first N receipts (name order)")
    for p in (ocr, table):
        p.add_argument("--dataset", type=Path, required=True)
        p.add_argument("--cache", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "ocr":
        # text_score 0: keep every box in the cache; the backend's own filter is applied at parse time
        overrides = {k: v for k, v in {"limit_side_len": args.limit_side_len,
                                       "limit_type": args.limit_type,
                                       "rec_head": args.rec_head,
                                       "rec_min_width": args.rec_min_width}.items() if v is not None}
        settings = OcrSettings(**{**asdict(OcrSettings()), "text_score": 0.0, **overrides})
        build_cache(args.dataset, args.cache, limit=args.limit, workers=args.workers, settings=settings)
    else:
        from extractor.ocr.train_picker import main as train_main

        train_argv = ["--cache", str(args.cache), "--dataset", str(args.dataset), "--folds", str(args.folds)]
        if args.out:
            train_argv += ["--out", str(args.out)]
        if args.report:
            train_argv += ["--report", str(args.report)]
        if args.store_cv:
            train_argv.append("--store-cv")
        train_argv += ["--second-opinion", args.second_opinion]
        if args.limit:
            train_argv += ["--limit", str(args.limit)]
        if args.reread_cache:
            train_argv += ["--reread-cache", str(args.reread_cache)]
        train_main(train_argv)


if __name__ == "__main__":
    main()
