"""End to end on several GPUs of one host: one worker process per GPU, as the compose
``gpu-per-device`` profile runs them (each process sees one card through
``CUDA_VISIBLE_DEVICES`` and loads its own model).

Runs ``bench/gpu_backend_e2e.py`` once on GPU 0 alone, then on every GPU at once; the
workers of the second run start their timed part together (a file barrier after each has
built its model and warmed up). Aggregate receipts/s = all receipts / (last end - first
start). Each worker gets its share of the host's cores (``OMP_NUM_THREADS`` = cores / GPUs,
in the one-GPU run too): without it every process sizes its CPU thread pools to the whole
host and they fight (run 1: 1.28x). Writes ``$OUT/gpu_workers.json``.

    python3 bench/gpu_workers.py --receipts 96 --batch 32 --new 256   # on a 2-GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def launch(gpus: list[int], args, out: Path, tag: str) -> dict:
    barrier = Path(tempfile.mkdtemp(prefix=f"barrier-{tag}-"))
    procs = []
    for gpu in gpus:
        cmd = [sys.executable, str(HERE / "gpu_backend_e2e.py"), "--receipts", str(args.receipts),
               "--batch", str(args.batch), "--new", str(args.new), "--generate-receipts", "0",
               "--barrier", str(barrier), "--workers", str(len(gpus)), "--out", str(out),
               "--name", f"worker-{tag}-gpu{gpu}.json"]
        threads = str(max(1, (os.cpu_count() or 2) // args.workers_per_host))  # the host's cores, shared
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu), OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate()[1][-2000:] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {errors}")
    runs = [json.loads((out / f"worker-{tag}-gpu{gpu}.json").read_text()) for gpu in gpus]
    receipts = sum(r["auto"]["receipts"] for r in runs)
    ok = sum(r["auto"]["ok"] for r in runs)
    wall = max(r["auto_end_unix"] for r in runs) - min(r["auto_start_unix"] for r in runs)
    return {"way": f"hf backend end to end, {len(gpus)} worker process(es), one per GPU", "gpus": len(gpus),
            "batch": args.batch, "receipts": receipts, "ok": ok, "wall_s": round(wall, 2),
            "receipts_per_s": round(receipts / wall, 3), "gpu": runs[0]["gpu"],
            "per_worker_receipts_per_s": [r["auto"]["receipts_per_s"] for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receipts", type=int, default=96, help="per worker")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    import torch

    count = torch.cuda.device_count()
    args.workers_per_host = count  # the one-GPU run gets one worker's share too: same worker, compared
    out = Path(args.out)
    rows = [launch([0], args, out, "one")]
    print(json.dumps(rows[-1]), flush=True)
    if count > 1:
        rows.append(launch(list(range(count)), args, out, "all"))
        print(json.dumps(rows[-1]), flush=True)
        rows[-1]["speedup_vs_one"] = round(rows[-1]["receipts_per_s"] / rows[0]["receipts_per_s"], 3)
    (out / "gpu_workers.json").write_text(json.dumps({"runs": rows}, indent=1))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
