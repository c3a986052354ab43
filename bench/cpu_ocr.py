"""CPU throughput and peak memory of the ``ocr`` backend on sroie-dev images.

Each configuration runs in its own process (so peak RSS is its own): the backend is
built once, warmed up on one receipt, then ``extract`` runs over N receipts in
batches; receipts/s counts the whole backend (decode, OCR, layout, parser).

    nice python bench/cpu_ocr.py --dataset ../shared/datasets/sroie-dev --n 40 \\
        [--configs shipped,rapidocr-defaults,...] [--json var/cpu_ocr.json]

Configurations (see docs/ocr.md for what each knob does):
- ``rapidocr-defaults``: RapidOCR's own settings (detector min side 736, angle
  classifier on, onnxruntime picks its thread count), one receipt at a time;
- ``det736-2w``: the shipped settings except the detector size;
- ``shipped-1w``: the shipped settings on one worker (one core);
- ``shipped-1w-2threads``: one worker, onnxruntime using two threads (the other way
  to use both cores);
- ``shipped``: the backend as shipped (two single-threaded workers);
- ``no-arena-2w``: shipped without onnxruntime's CPU memory arena (RapidOCR's default);
- ``det1024-2w``: shipped with the detector capped at 1024 px (faster; its accuracy was
  not measured on the full set, so it is not the default);
- ``full-head-2w`` / ``latin-head-2w``: RapidOCR's full 18,710-class recogniser head (the
  default) / the head cut to non-CJK characters (an option; on 2026-11-30 it was briefly
  the default, so ``shipped`` in that day's result file is the cut head);
- ``w160-2w``: shipped with the recogniser's minimum input width 160 instead of 320;
- ``first-read-2w``: shipped without the second opinion (no re-reads of doubtful lines);
- ``latin-w160-first-read-2w``: the cut head and width 160, no second opinion;
- ``det1024-latin-w160-first-read-2w``: that with the detector at 1024 px;
- ``ocr-fast``: the ``ocr-fast`` preset as the backend builds it from its spec (see
  ``extractor.backends.ocr.READERS``); ``shipped`` and the rest use the ``ocr`` preset's spec.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "rapidocr-defaults": dict(settings=dict(limit_type="min", limit_side_len=736, use_cls=True,
                                            intra_op_threads=-1, mem_arena=False, rec_head="full"), workers=1),
    "det736-2w": dict(settings=dict(limit_type="min", limit_side_len=736), workers=2),
    "shipped-1w": dict(settings={}, workers=1),
    "shipped-1w-2threads": dict(settings=dict(intra_op_threads=2), workers=1),
    "shipped": dict(settings={}, workers=2),
    "no-arena-2w": dict(settings=dict(mem_arena=False), workers=2),
    "det1024-2w": dict(settings=dict(limit_side_len=1024), workers=2),
    "full-head-2w": dict(settings=dict(rec_head="full"), workers=2),
    "latin-head-2w": dict(settings=dict(rec_head="latin"), workers=2),
    "w160-2w": dict(settings=dict(rec_min_width=160), workers=2),
    "first-read-2w": dict(settings={}, workers=2, second_opinion=False),
    "latin-w160-first-read-2w": dict(settings=dict(rec_head="latin", rec_min_width=160), workers=2,
                                     second_opinion=False),
    "det1024-latin-w160-first-read-2w": dict(settings=dict(limit_side_len=1024, rec_head="latin", rec_min_width=160),
                                             workers=2, second_opinion=False),
    "ocr-fast": dict(preset="ocr-fast", workers=2),
    # the recogniser's batch (crops sorted by width, each batch padded to its widest): 6 is RapidOCR's
    "recbatch1-2w": dict(settings=dict(rec_batch_num=1), workers=2),
    "recbatch16-2w": dict(settings=dict(rec_batch_num=16), workers=2),
    "recbatch32-2w": dict(settings=dict(rec_batch_num=32), workers=2),
}


def run_one(name: str, dataset: Path, n: int, batch: int) -> dict:
    from extractor.backends.ocr import OCRBackend
    from extractor.images import ReceiptInput
    from extractor.ocr.engine import OcrSettings
    from extractor.spec import resolve_spec

    cfg = CONFIGS[name]
    spec = resolve_spec(cfg.get("preset", "ocr"))
    # a preset's config runs what the backend builds from its spec; the others override it
    options = {} if "preset" in cfg else {"settings": OcrSettings(**cfg["settings"])}
    if cfg.get("second_opinion") is False:
        options["second_opinion"] = None
    images = sorted((dataset / "images").glob("*.jpg"))
    step = max(len(images) // n, 1)
    picked = images[::step][:n]  # spread over the set, not the first n ids
    inputs = [ReceiptInput.from_bytes(p.read_bytes(), str(p)) for p in picked]
    t0 = time.perf_counter()
    backend = OCRBackend(spec, workers=cfg["workers"], **options)
    load_s = time.perf_counter() - t0
    backend.extract(inputs[:1])  # warm-up (first-run allocations)
    cpu0, t0 = time.process_time(), time.perf_counter()
    ok = 0
    for start in range(0, len(inputs), batch):
        ok += sum(r.status == "ok" for r in backend.extract(inputs[start:start + batch]))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    backend.close()
    return {"config": name, "extractor": spec.version, "settings": backend.settings.to_dict(),
            "second_opinion": backend.second_opinion is not None, "workers": cfg["workers"], "receipts": len(inputs),
            "ok": ok, "load_s": round(load_s, 2), "wall_s": round(wall, 2),
            "receipts_per_s": round(len(inputs) / wall, 3), "s_per_receipt": round(wall / len(inputs), 3),
            "cpu_s_per_receipt": round(cpu / len(inputs), 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _cpu_model() -> str:
    """The CPU as lscpu names it, with the vector extensions that onnxruntime's kernels use."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    vector = "+".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni") if f in flags)
    return f"{fields.get('Model name', '?').strip()} ({vector})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16, help="receipts per extract() call (the ocr preset's batch)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: run one config, print JSON
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.dataset, args.n, args.batch)))
        return
    import onnxruntime
    import rapidocr

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    rows = []
    for name in args.configs.split(","):
        out = subprocess.run([sys.executable, __file__, "--dataset", str(args.dataset), "--n", str(args.n),
                              "--batch", str(args.batch), "--one", name],
                             capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    info = {"machine": f"{_cpu_model()}, {os.cpu_count()} cores", "load_average_before": load_before,
            "python": platform.python_version(), "rapidocr": rapidocr.__version__ if hasattr(rapidocr, "__version__")
            else "3.10.0", "onnxruntime": onnxruntime.__version__, "load_average_after": load}
    print("| config | workers | receipts/s | s/receipt | CPU s/receipt | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['config']} | {r['workers']} | {r['receipts_per_s']} | {r['s_per_receipt']} | "
              f"{r['cpu_s_per_receipt']} | {r['peak_rss_mib']} |")
    print(info)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
