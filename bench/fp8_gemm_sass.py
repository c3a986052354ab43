"""The instruction mix of the weight-only FP8 GEMM's loop, bf16 against float16 MMA inputs.

Compiles ``engine/fp8_gemm.py``'s kernel at one tiling both ways and counts the SASS
mnemonics (Triton's bundled cuobjdump), to see what widening e4m3 costs: to float16 one
``cvt.rn.f16x2.e4m3x2`` per two weights, to bf16 that and two ``cvt.bf16.f16`` more.

    python3 bench/fp8_gemm_sass.py --out DIR

Writes DIR/fp8_gemm_sass.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from extractor.engine import fp8_gemm  # noqa: E402
from extractor.engine.fp8_gemm import Tiling  # noqa: E402


def mix(t, m=32, n=4096, k=4096):
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    q = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn)
    s = torch.ones(n, device="cuda")
    o = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    acc, cnt = fp8_gemm.scratch(x.device, m, n)
    ck = fp8_gemm._kernel()[(n // t.bn, t.split)](x, q, s, o, acc, cnt, m, n, k, t.split,
                                                  BLOCK_M=fp8_gemm.block_m(m), BLOCK_N=t.bn, BLOCK_K=t.bk, F16=t.f16,
                                                  EVICT=t.evict, num_warps=t.warps, num_stages=t.stages)
    out = {"tiling": t._asdict(), "n_regs": getattr(ck, "n_regs", None), "n_spills": getattr(ck, "n_spills", None)}
    ptx = ck.asm.get("ptx", "")
    out["ptx_cvt"] = dict(collections.Counter(re.findall(r"\bcvt\.[\w.]+", ptx)).most_common(12))
    try:
        sass = ck.asm["sass"]
        ops = re.findall(r"^[-\w:]*:\w+\t(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]+)[ .;]", sass, re.M)  # "--:-:1:-:8\tLDC ..."
        out["sass_ops"] = dict(collections.Counter(ops).most_common(30))
        out["sass_lines"], out["sass_head"] = sass.count("\n"), sass[:1200]
    except Exception as exc:  # noqa: BLE001
        out["sass_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = [mix(Tiling(128, 128, 1, 8, 4, f16=False)), mix(Tiling(128, 128, 1, 8, 4)),
            mix(fp8_gemm.pick(32, 4096, 4096))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fp8_gemm_sass.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
