"""Where a decode step's time goes, kernel by kernel, and what other kernels would give.

Times, on one GPU, each GEMM shape a batch-32 decode step of the 11B Mllama runs (M rows
of activations against the layer's weight), three ways: cuBLAS bf16 (``F.linear``, what the
engine runs), ``torch._scaled_mm`` FP8 with per-row scales (the FP8 preset today, activation
quantization included) and the engine's weight-only FP8 GEMM in Triton (``engine/fp8_gemm.py``: bf16
activations, float8 e4m3 weights with one scale per output row, dequantized in registers,
its tiling picked per shape by ``fp8_gemm.pick``; checked again after the graph replays,
since its split-K leaves scratch that must be back at zero); and the step's attention calls
(self-attention over the static cache with a boolean mask, with the additive mask the
engine now builds once per step, and over a shorter cache; cross-attention over 4 tiles).
Every timing is a CUDA graph of 20 calls replayed,
so launch gaps count as they do inside the engine's graph. The GEMM timings go round
distinct copies of the weight (more than 200 MB of them, 4x the H100's L2; ``*_copies``
in each row), as the engine's step reads each weight once: before 2026-12-07 (v3) they
replayed one weight, and a 4096 x 4096 weight (33.5 MB in bf16) was read from L2.

    python3 bench/gpu_decode_kernels.py --out DIR [--batch 32]

Writes DIR/gpu_decode_kernels.json (rows with ``us``, bytes read and effective TB/s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from extractor.engine import fp8_gemm  # noqa: E402
from extractor.engine.mllama_decode import Fp8Weight, quantize_rows  # noqa: E402

# The 11B text model's decode GEMMs (out_features N, in_features K) and how often a step runs each.
SHAPES = [("self q|k|v", 6144, 4096, 32), ("self o", 4096, 4096, 32), ("gate|up", 28672, 4096, 40),
          ("down", 4096, 14336, 40), ("cross q", 4096, 4096, 8), ("cross o", 4096, 4096, 8),
          ("lm_head", 128256, 4096, 1)]


ROTATE_BYTES = 200e6  # weight copies a GEMM timing goes round: 4x the H100's 50 MB L2


def graph_us(fn, calls=20, reps=20, copies=None):
    """Microseconds per call of ``fn`` replayed from a CUDA graph of ``calls`` calls; with
    ``copies``, ``fn(i)`` takes the copy number and the graph goes round them (at least
    ``calls`` calls, a whole number of rounds), so no call finds its weight in L2."""
    call = fn if copies else (lambda i: fn())
    copies = copies or 1
    calls = copies * -(-calls // copies)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            call(i % copies)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            call(i % copies)
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (reps * calls)


def fp8_rows(w):
    """The engine's own FP8 copy of a weight (``Fp8Weight.of``): float8 [N, K], float32 scales [N]."""
    f8 = Fp8Weight.of(w)
    return f8.q, f8.scale[0]


def copies_of(t):
    """``t`` and enough clones of it that together they exceed ROTATE_BYTES."""
    n = max(1, -(-int(ROTATE_BYTES) // (t.numel() * t.element_size())))
    return [t] + [t.clone() for _ in range(n - 1)]


def time_cublas(row, x, w):
    ws = copies_of(w)
    us = graph_us(lambda i: F.linear(x, ws[i]), copies=len(ws))
    row["cublas_bf16_copies"] = len(ws)
    row["cublas_bf16_us"] = round(us, 2)
    row["cublas_bf16_tb_s"] = round(w.numel() * 2 / us / 1e6, 3)
    return us


def time_scaled_mm(row, x, q, s, quant):
    qs = copies_of(q)

    def scaled(i):
        xq, xs = quant(x)
        return torch._scaled_mm(xq, qs[i].t(), scale_a=xs, scale_b=s[None, :], out_dtype=torch.bfloat16)
    us = graph_us(scaled, copies=len(qs))
    row["scaled_mm_fp8_copies"] = len(qs)
    row["scaled_mm_fp8_us"] = round(us, 2)
    row["scaled_mm_fp8_tb_s"] = round(q.numel() / us / 1e6, 3)
    return us


def time_w8a16(row, x, q, s):
    """The Triton kernel: error against the dequantized product, the rotated timing, then the
    scratch (back at zero?) and the product again after the 400+ replays."""
    m, n = x.shape[0], q.shape[0]
    ref = x.float() @ (q.float() * s[:, None]).t()
    got = fp8_gemm.w8a16(x, q, s)
    row["triton_w8a16_rel_err"] = float((got.float() - ref).norm() / ref.norm())
    row["triton_w8a16_config"] = str(fp8_gemm.pick(m, n, x.shape[1]))
    qs = copies_of(q)
    us = graph_us(lambda i: fp8_gemm.w8a16(x, qs[i], s), copies=len(qs))
    acc, counters = fp8_gemm.scratch(x.device, m, n)
    row["triton_w8a16_scratch_clean_after_replays"] = bool(acc.eq(0).all() and counters.eq(0).all())
    again = fp8_gemm.w8a16(x, q, s).float()  # split-K sums in any order: equal up to rounding
    row["triton_w8a16_rel_err_after_replays"] = float((again - ref).norm() / ref.norm())
    row["triton_w8a16_copies"] = len(qs)
    row["triton_w8a16_us"] = round(us, 2)
    row["triton_w8a16_tb_s"] = round(n * x.shape[1] / us / 1e6, 3)
    return us


def gemm_rows(batch):
    quant = torch.compile(quantize_rows, fullgraph=True)
    rows, step = [], {"cublas_bf16": 0.0, "scaled_mm_fp8": 0.0, "triton_w8a16": 0.0}
    for name, n, k, per_step in SHAPES:
        torch.manual_seed(0)
        w = (torch.randn(n, k, device="cuda") * 0.02).to(torch.bfloat16)
        x = torch.randn(batch, k, device="cuda").to(torch.bfloat16)
        q, s = fp8_rows(w)
        row = {"gemm": name, "M": batch, "N": n, "K": k, "per_step": per_step}
        step["cublas_bf16"] += time_cublas(row, x, w) * per_step
        del w
        ways = [("scaled_mm_fp8", lambda: time_scaled_mm(row, x, q, s, quant))]  # noqa: B023
        if fp8_gemm.available():
            ways.append(("triton_w8a16", lambda: time_w8a16(row, x, q, s)))  # noqa: B023
        for way, timed in ways:
            try:
                step[way] += timed() * per_step
            except Exception as exc:  # noqa: BLE001 (record and go on)
                row[f"{way}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows, {key: round(v / 1000, 3) for key, v in step.items()}


def attention_rows(batch):
    rows = []
    kv, rep, d = 8, 4, 128
    q = torch.randn(batch, kv, rep, d, device="cuda", dtype=torch.bfloat16)
    for length in (704, 576, 448):
        k = torch.randn(batch, kv, length, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        valid = torch.rand(batch, length, device="cuda") < 0.9
        valid[:, 0] = True
        boolean = valid[:, None, None, :]
        additive = torch.zeros(batch, length, device="cuda", dtype=torch.bfloat16)
        additive = additive.masked_fill_(~valid, float("-inf"))[:, None, None, :]
        same = torch.equal(F.scaled_dot_product_attention(q, k, v, attn_mask=boolean),
                           F.scaled_dot_product_attention(q, k, v, attn_mask=additive))
        for label, mask in (("boolean mask", boolean), ("additive mask", additive), ("no mask", None)):
            us = graph_us(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))  # noqa: B023
            rows.append({"attention": f"self, {length} slots, {label}", "us": round(us, 2),
                         "tb_s": round(2 * k.numel() * 2 / us / 1e6, 3), "per_step": 32,
                         "boolean_equals_additive": same})
            print(json.dumps(rows[-1]), flush=True)
    for tiles in (4, 2):
        s = tiles * 1601
        k = torch.randn(batch, kv, s, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        us = graph_us(lambda: F.scaled_dot_product_attention(q, k, v))  # noqa: B023
        rows.append({"attention": f"cross, {tiles} tiles ({s} keys)", "us": round(us, 2),
                     "tb_s": round(2 * k.numel() * 2 / us / 1e6, 3), "per_step": 8})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def copy_tb_s():
    """The card's device-to-device copy rate (bytes read + written), as gpu_throughput.py's env section."""
    n = 2**30
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    return round(10 * 2 * n * 2 / (start.elapsed_time(end) / 1000) / 1e12, 3)


def _triton_version():
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--fp8-tuned", help="a bench/fp8_gemm_sweep.py result: its best tilings over fp8_gemm's own")
    args = ap.parse_args(argv)
    if args.fp8_tuned:
        fp8_gemm.load_tuned(args.fp8_tuned)
    props = torch.cuda.get_device_properties(0)
    report = {"env": {"date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "gpu": props.name,
                      "torch": torch.__version__, "cuda": torch.version.cuda,
                      "triton": _triton_version(), "copy_tb_s": copy_tb_s()}, "batch": args.batch}
    report["gemms"], report["gemm_ms_per_step"] = gemm_rows(args.batch)
    report["attention"] = attention_rows(args.batch)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_decode_kernels.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["gemm_ms_per_step"]))


if __name__ == "__main__":
    main()
