"""Peak memory and CPU of ``evaluate()`` with the ``ocr`` backend, arena on or off.

One process per run (peak RSS is the process's own). ``--no-arena`` turns onnxruntime's
CPU memory arena off (``OcrSettings.mem_arena``), which RapidOCR does by default;
``--mem-pattern`` turns onnxruntime's memory patterns back on (``OcrSettings.mem_pattern``,
off since issue 12's memory work); ``--full-rec-output`` has the recogniser return its
whole [batch, steps, classes] output for RapidOCR to decode, as before that work, instead
of its best path (``rec_model.add_best_path_output``); ``--rec-head latin`` runs the cut
recogniser head instead of the default full one:

    nice python bench/ocr_eval_memory.py --dataset DIR [--no-arena] [--mem-pattern] [--full-rec-output]
        [--rec-head latin]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from extractor.backends.ocr import OCRBackend
    from extractor.evaluation import evaluate
    from extractor.ocr.engine import OcrSettings
    from extractor.spec import resolve_spec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--no-arena", action="store_true")
    ap.add_argument("--mem-pattern", action="store_true")
    ap.add_argument("--full-rec-output", action="store_true")
    ap.add_argument("--rec-head", choices=["full", "latin"], default=OcrSettings().rec_head)
    args = ap.parse_args(argv)
    if args.full_rec_output:  # a measurement switch, not a setting: the reads are the same either way
        from extractor.ocr import rec_model

        rec_model.best_path_model = lambda path: None
    settings = OcrSettings(mem_arena=not args.no_arena, mem_pattern=args.mem_pattern, rec_head=args.rec_head)
    backend = OCRBackend(resolve_spec("ocr"), settings=settings)
    cpu0 = time.process_time()
    report = evaluate(backend, args.dataset)
    backend.close()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(json.dumps({"mem_arena": not args.no_arena, "mem_pattern": args.mem_pattern,
                      "full_rec_output": args.full_rec_output, "rec_head": args.rec_head,
                      "receipts": report.n,
                      "load_average_after": load,
                      "cpu_s_per_receipt": round((time.process_time() - cpu0) / report.n, 3),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "exact": {k: round(v.rate("exact"), 3) for k, v in report.fields.items()}}))


if __name__ == "__main__":
    main()
