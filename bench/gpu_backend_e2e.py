"""End-to-end throughput of the ``hf`` backend itself on the Llama 3.2 11B Vision shape.

``bench/gpu_throughput.py`` times the decoder on synthetic tensors; this times what a
worker does per batch: decode the receipt JPEGs, shrink them, the chat template and the
Mllama processor (tiling, on the CPU), the static engine (or ``generate``), decoding the
new tokens, JSON repair and schema validation. Random weights of the real 11B config
(speed does not depend on weight values); the tokenizer is the tiny model's locally
trained one (the real Llama tokenizer cannot be downloaded here), so the prompt's token
count differs from the real model's and is printed; the image processor is Mllama's at
the real 560 px / 4 tiles. Output length is pinned (min = max new tokens) for honest
numbers: this is a bench-only setting, the backend itself stops at EOS.

    python3 bench/gpu_backend_e2e.py --receipts 96 --batch 32 --new 256   # on the device machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
import transformers  # noqa: E402
from gpu_throughput import build_model  # noqa: E402

from extractor.backends.hf import HFBackend  # noqa: E402
from extractor.images import ReceiptInput  # noqa: E402
from extractor.spec import resolve_spec  # noqa: E402
from extractor.testing.tiny_models import build_tiny_model  # noqa: E402


def processor_for_11b():
    from transformers import AutoProcessor, MllamaImageProcessor

    tiny = build_tiny_model("mllama", Path(tempfile.mkdtemp()) / "tiny")
    processor = AutoProcessor.from_pretrained(tiny, local_files_only=True)
    processor.image_processor = MllamaImageProcessor(size={"height": 560, "width": 560}, max_image_tiles=4)
    return processor


class PreloadedBackend(HFBackend):
    """The real backend with the model handed in instead of read from disk (20 GB)."""

    preloaded: tuple = ()
    pin_new_tokens = True

    def _load(self):
        return self.preloaded

    def _generate(self, model_inputs, max_new_tokens, min_new_tokens=0, **kwargs):
        pinned = max_new_tokens if self.pin_new_tokens else min_new_tokens
        return super()._generate(model_inputs, max_new_tokens, min_new_tokens=pinned, **kwargs)


def receipts(n: int) -> list[ReceiptInput]:
    images = sorted((ROOT / "include/extractor/samples/receipts").glob("*.jpg"))
    return [ReceiptInput.from_bytes(images[i % len(images)].read_bytes(), f"r{i}") for i in range(n)]


def run(backend, items, batch):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    results = []
    for start in range(0, len(items), batch):
        results += backend.extract(items[start:start + batch])
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    pre = sum(r.timings.get("preprocess_s", 0) for r in results)
    return {"receipts": len(results), "wall_s": round(wall, 2), "receipts_per_s": round(len(results) / wall, 3),
            "decode_and_shrink_s": round(pre, 2),
            "statuses": {s: sum(r.status == s for r in results) for s in ("ok", "failed")},
            "ok": sum(r.status == "ok" for r in results),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receipts", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--generate-receipts", type=int, default=32, help="0 skips the generate comparison")
    ap.add_argument("--grammar", choices=["receipt-json", "none"], default="receipt-json",
                    help="the backend's decoding grammar (default: its own default); with a grammar the "
                         "output length is not pinned (a closed object allows only EOS)")
    ap.add_argument("--quantization", choices=["fp8"], help="the spec's quantization (fp8: the static engine's "
                    "float8 weights and cross keys/values, as the fp8 preset runs them; no generate comparison)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--barrier", help="folder: after warm-up, wait until --workers files are there "
                                      "(bench/gpu_workers.py starts one process per GPU this way)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--name", default="gpu_backend_e2e.json")
    a = ap.parse_args()
    rec = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__, "batch": a.batch, "new_tokens": a.new}
    processor, model = processor_for_11b(), build_model()
    PreloadedBackend.preloaded = (processor, model)
    PreloadedBackend.pin_new_tokens = a.grammar == "none"
    rec["grammar"] = a.grammar
    rec["image_processor"] = type(processor.image_processor).__name__
    items = receipts(a.receipts)
    for engine in ("auto", "generate"):
        if engine == "generate" and (not a.generate_receipts or a.quantization):
            continue
        spec = resolve_spec({"backend": "hf", "model_id": "random/llama-3.2-11b-vision-shape",
                             "batch_size": a.batch, "max_new_tokens": a.new, "engine": engine,
                             "device_map": None, "grammar": a.grammar, "quantization": a.quantization})
        rec["extractor_version"] = spec.version
        backend = PreloadedBackend(spec)
        probe = backend.batch_inputs([backend._preprocess(items[0])], [backend.processor.apply_chat_template(
            __import__("extractor.prompts", fromlist=["x"]).build_messages(spec, backend.questions["full"]),
            add_generation_prompt=True, tokenize=False)])
        rec["prompt_tokens"] = int(probe["input_ids"].shape[1])
        rec["tiles_first_receipt"] = int(probe["aspect_ratio_mask"].sum())
        t = time.perf_counter()
        backend.extract(items[:a.batch])  # warm-up: compile + graph capture for this shape
        rec[f"{engine}_warmup_s"] = round(time.perf_counter() - t, 1)
        n = a.receipts if engine == "auto" else a.generate_receipts
        rec[f"{engine}_engine"] = backend.engine_name
        if a.barrier and engine == "auto":
            wait_for_peers(Path(a.barrier), a.workers)
        rec[f"{engine}_start_unix"] = time.time()
        rec[engine] = run(backend, items[:n], a.batch)
        rec[f"{engine}_end_unix"] = time.time()
        print(json.dumps({engine: rec[engine], "engine": backend.engine_name}), flush=True)
        backend.engine = None
        torch.cuda.empty_cache()
    print(json.dumps(rec, indent=1))
    Path(a.out, a.name).write_text(json.dumps(rec, indent=1))


def wait_for_peers(barrier: Path, workers: int) -> None:
    """Every worker writes its file once warm, then waits for all: the timed runs overlap."""
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"ready-{os.getpid()}").touch()
    while len(list(barrier.glob("ready-*"))) < workers:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
