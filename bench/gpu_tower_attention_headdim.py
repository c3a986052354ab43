"""The vision tower's attention kernel at its head dim (80) and zero-padded to 96 and 128.

One layer of the Mllama vision tower's attention for a prefill of ``B`` receipts: 16 heads
over 6,432 tokens (4 tiles of 1,608), head dim 80, through each SDPA backend. Padding q, k
and v with zeros to a larger head dim gives the same output in the first 80 columns (the
scale stays 1/sqrt(80)), so if a backend were faster at 96 or 128 the tower could pad.
``tflops_at_80`` is the useful work (4 * B * H * S^2 * 80) over the time.

Run on a CUDA machine: ``python3 bench/gpu_tower_attention_headdim.py --out DIR``
(writes ``DIR/gpu_tower_attention_headdim.json``).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F
from fp8_prefill_gemms import mean_ms  # the bench's CUDA-event timer (3 warm-up calls)
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")


def rows_for(q80, k80, v80, dim: int, ref):
    """One row per backend at head dim ``dim`` (q, k and v zero-padded to it)."""
    b, h, s, _ = q80.shape
    flop80 = 4 * b * h * s * s * 80
    q, k, v = (F.pad(t, (0, dim - 80)) for t in (q80, k80, v80))
    rows = []
    for name in BACKENDS:
        try:
            with sdpa_kernel([getattr(SDPBackend, name)]):
                call = lambda: F.scaled_dot_product_attention(q, k, v, scale=80 ** -0.5)  # noqa: E731
                out = call()[..., :80].float()
                ms = mean_ms(call, 10)
            ref = out if ref is None else ref
            err = ((out - ref).norm() / ref.norm()).item()
            rows.append(dict(head_dim=dim, backend=name, ms=round(ms, 3), ms_per_receipt=round(ms / b, 3),
                             tflops_at_80=round(flop80 / ms / 1e9, 1), rel_diff_vs_first=err))
        except Exception as ex:  # a backend that refuses this shape is a row with its reason
            rows.append(dict(head_dim=dim, backend=name, error=repr(ex)[:200]))
        print(rows[-1], flush=True)
    return rows, ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    torch.manual_seed(0)
    q80, k80, v80 = (torch.randn(args.batch, 16, 6432, 80, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    rows, ref = [], None
    for dim in (80, 96, 128):
        got, ref = rows_for(q80, k80, v80, dim, ref)
        rows += got
    result = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, batch=args.batch, heads=16,
                  tokens=6432, rows=rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_tower_attention_headdim.json"), "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
