"""The weight-only FP8 kernel's host side (engine/fp8_gemm.py): tiling choice and the tuned table.
The kernel itself needs a GPU (or Triton's interpreter); bench/gpu_decode_kernels.py checks it there."""

import json

from extractor.engine import fp8_gemm
from extractor.engine.fp8_gemm import Tiling


def test_every_decode_shape_gets_a_tiling_that_divides_it_and_fits():
    shapes = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (128256, 4096), (128, 1024)]
    for m in (1, 8, 32, 33, 64, 128):
        for n, k in shapes:
            t = fp8_gemm.pick(m, n, k)
            assert fp8_gemm.fits(t, m, n, k), (m, n, k, t)
            assert n % t.bn == 0 and k % (t.bk * t.split) == 0


def test_a_sweep_result_overrides_the_built_in_choice(tmp_path):
    best = {"M": 32, "N": 4096, "K": 4096, "tiling": Tiling(64, 256, 2, 4, 3, f16=False, evict=True)._asdict()}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"best": [best]}))
    saved = dict(fp8_gemm._TUNED)
    try:
        assert fp8_gemm.load_tuned(path) == 1
        assert fp8_gemm.pick(32, 4096, 4096) == Tiling(64, 256, 2, 4, 3, f16=False, evict=True)
        assert fp8_gemm.pick(17, 4096, 4096) == Tiling(64, 256, 2, 4, 3, f16=False, evict=True)  # same BLOCK_M
    finally:
        fp8_gemm._TUNED.clear()
        fp8_gemm._TUNED.update(saved)
