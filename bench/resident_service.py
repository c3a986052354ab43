"""Extract tasks through the resident extraction service vs tasks that load the model themselves.

What an Airflow extract task does, ``--tasks`` times in a row, each task a fresh process (as
Airflow 3 forks one per task instance) with ``--receipts`` receipts read from disk and sent
one model batch (``--batch``) at a time:

  way ``service``  the task is a client (``extractor.serving.client.ServiceBackend``) of one
                   ``python -m extractor serve`` process that loaded the model once (and
                   ran its start-up warm-up batch before turning ready);
                   ``--concurrency`` tasks run at a time (a GPU worker's Celery slots)
  way ``in-task``  the task imports torch, loads the model (``load_backend``) and warms
                   the engine itself, then extracts: today's behaviour

Model: random weights of the real Llama 3.2 11B Vision config (``gpu_throughput.build_model``),
saved once as a bf16 safetensors checkpoint (~21 GB) with the 560 px / 4-tile Mllama image
processor and the tiny model's tokenizer (``gpu_backend_e2e.processor_for_11b``), so loading
is a real ``from_pretrained`` from local disk (in practice from the page cache: the file was
just written; a network share such as EFS is slower). ``--tiny`` uses the tiny random Mllama
on the CPU instead, to test this script anywhere. Output length is pinned (min = max new
tokens, a bench-only patch of ``HFBackend._generate`` in both ways), as in the other GPU benches.

Rows (``$OUT/resident_service.json``, rewritten after every task): per task ``way``,
``model_load_s`` (imports + load + waiting for the service), ``warmup_s`` (first batch
minus a steady batch: graph capture and compilation), ``extract_s``, ``task_s``; per way
``receipts_per_s`` over the series' wall time, the share of that time spent loading, and
the service's steady state (median full-batch time inside the service).

    python3 bench/resident_service.py --ways service,in-task   # on the device machine
    python bench/resident_service.py --tiny --tasks 3 --receipts 8 --batch 4 --new 8   # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))
SAMPLES = ROOT / "include" / "extractor" / "samples" / "receipts"


def spec_for(args, model_dir: str) -> dict:
    return {"backend": "hf", "model_id": "tiny/mllama" if args.tiny else "random/llama-3.2-11b-vision-shape",
            "revision": "bench", "source": model_dir, "batch_size": args.batch,
            "max_new_tokens": args.new, "dtype": "float32" if args.tiny else "bfloat16"}


def pin_output_length() -> None:
    """Bench only: every receipt gets exactly max_new_tokens tokens (random weights rarely
    stop on their own, but not never)."""
    from extractor.backends.hf import HFBackend

    original = HFBackend._generate

    def pinned(self, model_inputs, max_new_tokens, min_new_tokens=0, **kwargs):
        return original(self, model_inputs, max_new_tokens, min_new_tokens=max_new_tokens, **kwargs)

    HFBackend._generate = pinned


# ----------------------------------------------------------------------------- roles (subprocesses)

def role_build(args) -> None:
    """Write the checkpoint (and the receipts the tasks read) under --work."""
    work = Path(args.work)
    model_dir = work / "model"
    t0 = time.perf_counter()
    if (model_dir / "model.safetensors.index.json").exists() or (model_dir / "model.safetensors").exists():
        pass  # an earlier call on this (still warm) machine wrote it
    elif args.tiny:
        from extractor.testing.tiny_models import build_tiny_model

        build_tiny_model("mllama", model_dir)
    else:
        import torch
        from gpu_backend_e2e import processor_for_11b
        from gpu_throughput import build_model

        model = build_model()
        model.save_pretrained(model_dir)
        processor_for_11b().save_pretrained(model_dir)
        del model
        torch.cuda.empty_cache()
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    receipts = work / "receipts"
    receipts.mkdir(parents=True, exist_ok=True)
    for sample in sorted(SAMPLES.glob("*.jpg")):
        (receipts / sample.name).write_bytes(sample.read_bytes())
    print(json.dumps({"build_s": round(time.perf_counter() - t0, 1), "checkpoint_gb": round(size / 1e9, 2)}))


def role_service(args) -> None:
    pin_output_length()
    from extractor.serving.app import serve

    model_dir = str(Path(args.work) / "model")
    serve(model=json.dumps(spec_for(args, model_dir)), model_dir=model_dir, port=args.port,
          max_wait_ms=args.max_wait_ms, log_level="warning")


def role_task(args) -> None:
    """One extract task: read the receipts one model batch at a time, extract, report."""
    t_start = time.perf_counter()
    from extractor.images import ReceiptInput
    from extractor.spec import ExtractorSpec

    model_dir = str(Path(args.work) / "model")
    spec = ExtractorSpec(**spec_for(args, model_dir))
    if args.way == "service":  # as tasks._extraction_backend: only a load the task waited for counts
        from extractor.serving.client import ServiceBackend

        backend = ServiceBackend.connect(args.url, spec, model_dir, timeout_s=1800)
        model_load_s = backend.startup_load_s
    else:  # torch and transformers are imported by the load: they count
        pin_output_length()
        from extractor.backends import load_backend

        t0 = time.perf_counter()
        backend = load_backend(spec, model_dir)
        model_load_s = time.perf_counter() - t0
    startup_s = time.perf_counter() - t_start - model_load_s
    files = sorted((Path(args.work) / "receipts").glob("*.jpg"))
    batch_s, statuses = [], {"ok": 0, "failed": 0}
    for start in range(0, args.receipts, args.batch):
        inputs = [ReceiptInput.from_bytes(files[i % len(files)].read_bytes(), f"r{i}")
                  for i in range(start, min(start + args.batch, args.receipts))]
        t0 = time.perf_counter()
        for result in backend.extract(inputs):
            statuses[result.status] += 1
        batch_s.append(time.perf_counter() - t0)
    reloads = getattr(backend, "request_load_s", 0.0)  # as tasks.extract_batch counts it
    model_load_s, extract_s = model_load_s + reloads, sum(batch_s) - reloads
    steady = statistics.median(batch_s[1:]) if len(batch_s) > 2 else batch_s[-1]
    print("TASK " + json.dumps({
        "way": args.way, "model_load_s": round(model_load_s, 3), "extract_s": round(extract_s, 3),
        "warmup_s": round(max(0.0, batch_s[0] - steady), 3) if args.way == "in-task" else 0.0,
        "startup_s": round(startup_s, 3), "batch_s": [round(b, 3) for b in batch_s],
        "receipts": sum(statuses.values()),
        "statuses": statuses, "task_s": round(time.perf_counter() - t_start, 3)}), flush=True)


# ----------------------------------------------------------------------------- the driver

class Recorder:
    def __init__(self, out: Path, meta: dict):
        self.path, self.data = out / "resident_service.json", {**meta, "tasks": [], "ways": []}

    def add(self, key: str, row: dict) -> None:
        self.data[key].append(row)
        print(json.dumps(row), flush=True)
        self.path.write_text(json.dumps(self.data, indent=1))


def _child(args, role: str, *extra: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--work", args.work,
            "--batch", str(args.batch), "--new", str(args.new), "--receipts", str(args.receipts)]
    return argv + (["--tiny"] if args.tiny else []) + list(extra)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def run_series(args, rec: Recorder, way: str, url: str | None, concurrency: int, deadline: float) -> dict:
    """``--tasks`` tasks, ``concurrency`` at a time; stops starting tasks near the deadline."""
    extra = ["--way", way] + (["--url", url] if url else [])
    running, done, started = [], [], 0
    t0 = time.perf_counter()
    longest = 0.0
    while started < args.tasks or running:
        while started < args.tasks and len(running) < concurrency and \
                time.monotonic() + 1.2 * longest < deadline:
            running.append((time.perf_counter(), subprocess.Popen(
                _child(args, "task", *extra), stdout=subprocess.PIPE, text=True)))
            started += 1
        if not running:
            break
        begun, proc = running.pop(0)
        out, _ = proc.communicate()
        line = next((x for x in out.splitlines() if x.startswith("TASK ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"{way} task failed (rc={proc.returncode}):\n{out[-3000:]}")
        row = {**json.loads(line[5:]), "concurrency": concurrency,
               "process_s": round(time.perf_counter() - begun, 3)}
        longest = max(longest, row["process_s"])
        done.append(row)
        rec.add("tasks", row)
    wall = time.perf_counter() - t0
    receipts = sum(r["receipts"] for r in done)
    loading = sum(r["model_load_s"] + r["warmup_s"] for r in done) / max(concurrency, 1)
    return {"way": way, "concurrency": concurrency, "tasks": len(done), "receipts": receipts,
            "wall_s": round(wall, 2), "receipts_per_s": round(receipts / wall, 3),
            "loading_share": round(min(loading / wall, 1.0), 4),
            "model_load_s_per_task": [r["model_load_s"] for r in done],
            "extract_s_per_task": [r["extract_s"] for r in done]}


def way_service(args, rec: Recorder, deadline: float) -> None:
    port = 8000 + os.getpid() % 1000
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    service = subprocess.Popen(_child(args, "service", "--port", str(port),
                                      "--max-wait-ms", str(args.max_wait_ms)))
    try:
        while True:
            try:
                health = _get(url + "/health")
                if health["status"] == "ready":
                    break
            except OSError:  # not listening yet, or 503 while loading
                pass
            if service.poll() is not None:
                raise RuntimeError(f"service exited with {service.returncode}")
            time.sleep(0.5)
        start_s = time.perf_counter() - t0
        for n, concurrency in enumerate(args.concurrency):
            if n:  # the service's start is charged to the first series only
                start_s = 0.0
            series = run_series(args, rec, "service", url, concurrency, deadline)
            stats, health = _get(url + "/stats"), _get(url + "/health")
            full = [s for n, s in zip(stats["batch_sizes"], stats["batch_seconds"], strict=True)
                    if n == args.batch]
            steady = statistics.median(full[1:] or full)
            rec.add("ways", {**series, "service_start_to_ready_s": round(start_s, 2),
                             "service_loads": health["loads"], "service_last_load_s": health["last_load_s"],
                             "receipts_per_s_with_service_start": round(
                                 series["receipts"] / (series["wall_s"] + start_s), 3),
                             "loading_share_with_service_start": round(
                                 (start_s + series["loading_share"] * series["wall_s"])
                                 / (start_s + series["wall_s"]), 4),
                             "steady_batch_s": round(steady, 3),
                             "steady_receipts_per_s": round(args.batch / steady, 3),
                             "share_of_steady_state": round(
                                 series["receipts_per_s"] * steady / args.batch, 4),
                             "service_batch_sizes": stats["batch_sizes"]})
    finally:
        service.terminate()
        service.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="driver", choices=("driver", "build", "service", "task"))
    ap.add_argument("--ways", default="service,in-task")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--receipts", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--concurrency", default="1", help="service way: task series to run, e.g. 1,2")
    ap.add_argument("--max-wait-ms", type=float, default=50)
    ap.add_argument("--budget-s", type=float, default=560, help="start no task that would end after this")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--work", default="/tmp/resident-bench")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--way"), ap.add_argument("--url"), ap.add_argument("--port", type=int)
    args = ap.parse_args()
    if args.role != "driver":
        {"build": role_build, "service": role_service, "task": role_task}[args.role](args)
        return
    deadline = time.monotonic() + args.budget_s
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    build = subprocess.run(_child(args, "build"), capture_output=True, text=True, check=False)
    if build.returncode != 0:
        raise SystemExit(build.stdout[-2000:] + build.stderr[-4000:])
    meta = {"gpu": _gpu_name(), "tiny": args.tiny, "batch": args.batch, "new_tokens": args.new,
            "receipts_per_task": args.receipts, **json.loads(build.stdout.strip().splitlines()[-1])}
    rec = Recorder(Path(args.out), meta)
    print(json.dumps(meta), flush=True)
    for way in args.ways.split(","):
        try:
            run_way(args, rec, way, deadline)
        except Exception as exc:  # noqa: BLE001 - keep what the other way measured
            rec.data.setdefault("errors", []).append(f"{way}: {type(exc).__name__}: {exc}"[:4000])
            print(f"ERROR in way {way}: {exc}", flush=True)
    rec.path.write_text(json.dumps(rec.data, indent=1))
    for row in rec.data["ways"]:
        print(f"{row['way']:>8} x{row['concurrency']} tasks={row['tasks']} "
              f"{row['receipts_per_s']:.2f} receipts/s "
              f"({100 * row['share_of_steady_state']:.0f} % of steady {row['steady_receipts_per_s']:.2f}), "
              f"loading {100 * row['loading_share']:.0f} % of the time")


def run_way(args, rec: Recorder, way: str, deadline: float) -> None:
    if way == "service":
        way_service(args, rec, deadline)
        return
    series = run_series(args, rec, "in-task", None, 1, deadline)
    steady = statistics.median(b for r in rec.data["tasks"] if r["way"] == "in-task"
                               for b in r["batch_s"][1:])
    rec.add("ways", {**series, "steady_batch_s": round(steady, 3),
                     "steady_receipts_per_s": round(args.batch / steady, 3),
                     "share_of_steady_state": round(series["receipts_per_s"] * steady / args.batch, 4)})


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "cpu"
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"


if __name__ == "__main__":
    main()
