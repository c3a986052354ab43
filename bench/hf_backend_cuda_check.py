"""CUDA check of the hf backend on tiny models: dtype, device, engine choice, batched == single.

Run on a CUDA machine from the repository root (the device machine has no ``extractor``
installed, hence the sys.path line; pydantic and bitsandbytes travel as wheels):

    python3 bench/hf_backend_cuda_check.py     # writes $OUT/hf_cuda_check.json

Checks, on the tiny random models of ``extractor.testing.tiny_models``: the spec's dtype and
device are used, engine "auto" picks the static Mllama engine on CUDA, batched output
equals one-at-a-time output, and bitsandbytes 8-bit / 4-bit quantise the language model
only (vision tower, projector and lm_head stay ``nn.Linear``). Results: docs/models.md.
"""
import io
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, "include")
import numpy as np
import torch
import transformers
from PIL import Image

from extractor.backends.hf import HFBackend
from extractor.images import ReceiptInput
from extractor.spec import resolve_spec
from extractor.testing.tiny_models import build_tiny_model


def jpeg(seed, size):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


report = {"torch": torch.__version__, "transformers": transformers.__version__, "gpu": torch.cuda.get_device_name(0), "runs": []}
items = [ReceiptInput.from_bytes(jpeg(i, (60 + 37 * i, 200 - 13 * i)), f"r{i}") for i in range(8)]
root = tempfile.mkdtemp()
for kind in ("mllama", "llava"):
    path = build_tiny_model(kind, os.path.join(root, kind))
    texts = {}
    for engine in ("generate", "auto"):
        for dtype in ("float32", "bfloat16"):
            spec = resolve_spec({"backend": "hf", "model_id": f"tiny/{kind}", "max_new_tokens": 24,
                                 "batch_size": 8, "engine": engine, "dtype": dtype})
            b = HFBackend(spec, model_dir=path)
            t = time.perf_counter(); batched = [r.raw_text for r in b.extract(items)]; tb = time.perf_counter() - t
            single = [b.extract([it])[0].raw_text for it in items]
            texts[(engine, dtype)] = batched
            run = {"kind": kind, "engine_wanted": engine, "engine": b.engine_name, "dtype": str(b.model.dtype),
                   "device": str(b.model.device), "batched_equals_single": sum(x == y for x, y in zip(batched, single, strict=False)),
                   "n": len(items), "batch_s": round(tb, 3), "statuses": sorted({r.status for r in b.extract(items[:2])})}
            print(json.dumps(run), flush=True)
            report["runs"].append(run)
            b.close()
    for dtype in ("float32", "bfloat16"):
        same = sum(x == y for x, y in zip(texts[("generate", dtype)], texts[("auto", dtype)], strict=False))
        report["runs"].append({"kind": kind, "dtype": dtype, "auto_vs_generate_equal": same})
        print(kind, dtype, "auto vs generate equal:", same, "/", len(items), flush=True)
# bitsandbytes for real on the tiny Mllama: which linears got quantised
try:
    import bitsandbytes as bnb
    for bits in ("8bit", "4bit"):
        spec = resolve_spec({"backend": "hf", "model_id": "tiny/mllama", "max_new_tokens": 8, "quantization": bits})
        b = HFBackend(spec, model_dir=os.path.join(root, "mllama"))
        kinds = {}
        for name, module in b.model.named_modules():
            if isinstance(module, torch.nn.Linear):
                part = name.split(".")[1] if name.startswith("model.") else name
                kinds.setdefault(part, set()).add(type(module).__name__)
        out = b.extract(items[:3])
        run = {"quantization": bits, "engine": b.engine_name, "linear_types": {k: sorted(v) for k, v in kinds.items()},
               "statuses": [r.status for r in out], "raw_nonempty": all(r.raw_text for r in out),
               "mem_gib": round(torch.cuda.memory_allocated() / 2**30, 4)}
        print(json.dumps(run), flush=True)
        report["runs"].append(run)
        b.close()
except ImportError as exc:
    print("no bitsandbytes:", exc)
# the 11B architecture's skip list, from its module tree on the meta device
from extractor.quantization import skip_modules_for_config

report["mllama_11b_skip"] = skip_modules_for_config(transformers.MllamaConfig())
print(report["mllama_11b_skip"])
json.dump(report, open(os.path.join(os.environ.get("OUT", "."), "hf_cuda_check.json"), "w"), indent=1)
