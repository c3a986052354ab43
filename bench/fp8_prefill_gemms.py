"""The prefill's GEMMs one by one: bf16 ``F.linear`` against the FP8 path of
``engine/fp8_prefill.py`` (activations quantized per row, then ``torch._scaled_mm``), with
the activations' quantization by ``torch.compile`` (``quant_ms``) and by the Triton kernel
(``triton_quant_ms``; checked equal to eager ``quantize_rows`` bit for bit).

Runs on the device machine. Shapes are those of the 11B prefill at ``prefill_batch`` 8
(vision tower: 8 images x 6,432 tokens; projector: 8 x 6,404; text: 8 x 400 tokens; HF runs
q, k, v and gate, up as separate modules). Each timing is the mean of ``--reps`` calls
after warm-up, CUDA events. Writes $OUT/fp8_prefill_gemms.json.

    python bench/fp8_prefill_gemms.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path

_INCLUDE = Path(__file__).resolve().parents[1] / "include"
sys.path.insert(0, str(_INCLUDE))
try:
    import extractor  # noqa: F401
except ImportError:  # the device image lacks the ETL's own deps (pydantic): load only the engine
    _pkg = types.ModuleType("extractor")
    _pkg.__path__ = [str(_INCLUDE / "extractor")]
    sys.modules["extractor"] = _pkg

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SHAPES = {  # name: (M, K, N, calls per receipt-batch of 8)
    "vision q/k/v/o 1280x1280": (8 * 6432, 1280, 1280, 4 * 40),
    "vision fc1 1280->5120": (8 * 6432, 1280, 5120, 40),
    "vision fc2 5120->1280": (8 * 6432, 5120, 1280, 40),
    "projector 7680->4096": (8 * 6404, 7680, 4096, 1),
    "text q/o 4096x4096": (8 * 400, 4096, 4096, 2 * 32),
    "text k/v 4096->1024": (8 * 400, 4096, 1024, 2 * 32),
    "text gate/up 4096->14336": (8 * 400, 4096, 14336, 2 * 40),
    "text down 14336->4096": (8 * 400, 14336, 4096, 40),
    "cross k/v 4096->1024 (image tokens)": (8 * 6404, 4096, 1024, 2 * 8),
}


def mean_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def one(name, m, k, n, calls, quant, reps):
    from extractor.engine.fp8_prefill import quantize_rows_triton
    from extractor.engine.mllama_decode import Fp8Weight, quantize_rows

    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    fw = Fp8Weight.of(w)
    xq, xs = quant(x)
    bf16 = mean_ms(lambda: F.linear(x, w), reps)
    q_ms = mean_ms(lambda: quant(x), reps)
    tq_ms = mean_ms(lambda: quantize_rows_triton(x), reps)
    (eq, es), (tq, ts) = quantize_rows(x), quantize_rows_triton(x)
    triton_same = bool(torch.equal(eq.view(torch.uint8), tq.view(torch.uint8)) and torch.equal(es, ts))
    mm = mean_ms(lambda: torch._scaled_mm(xq, fw.q.t(), scale_a=xs, scale_b=fw.scale, out_dtype=torch.bfloat16),
                 reps)
    flop = 2 * m * k * n
    ref = F.linear(x.float(), w.float())
    got = torch._scaled_mm(xq, fw.q.t(), scale_a=xs, scale_b=fw.scale, out_dtype=torch.bfloat16).float()
    row = {"gemm": name, "m": m, "k": k, "n": n, "calls": calls, "bf16_ms": round(bf16, 4),
           "quant_ms": round(q_ms, 4), "scaled_mm_ms": round(mm, 4), "fp8_total_ms": round(q_ms + mm, 4),
           "triton_quant_ms": round(tq_ms, 4), "fp8_total_triton_ms": round(tq_ms + mm, 4),
           "triton_quant_equals_quantize_rows": triton_same,
           "bf16_tflops": round(flop / bf16 / 1e9, 1), "scaled_mm_tflops": round(flop / mm / 1e9, 1),
           "rel_err": round(float((got - ref).norm() / ref.norm()), 5)}
    print(json.dumps(row), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    from extractor.engine.mllama_decode import quantize_rows

    quant = torch.compile(quantize_rows, dynamic=True, fullgraph=True)
    rows = [one(name, *shape, quant, args.reps) for name, shape in SHAPES.items()]
    per_batch = {key: round(sum(r[key] * r["calls"] for r in rows), 2)
                 for key in ("bf16_ms", "quant_ms", "scaled_mm_ms", "fp8_total_ms", "triton_quant_ms",
                             "fp8_total_triton_ms")}
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows,
           "per_prefill_of_8_receipts_ms": per_batch}
    print(json.dumps(per_batch), flush=True)
    with open(os.path.join(args.out, "fp8_prefill_gemms.json"), "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
