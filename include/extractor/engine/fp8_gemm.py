"""A weight-only FP8 GEMM for decode steps: bf16 activations, float8 e4m3 weights.

A decode step at batch 32 multiplies a few rows of activations by every weight of the model:
it is bound by reading the weights, so half the bytes (FP8) should make it faster. The
``torch._scaled_mm`` path (``Fp8Weight`` with ``kernel="scaled_mm"``) also quantizes the
activations, which costs a kernel per GEMM and, at 32 rows, as much as the saved reads
(docs/gpu.md, "FP8 decode weights"). Here the weights are the only FP8 operand: each
program loads a block of weight rows as float8, widens them in registers and runs them
through the tensor cores against the (few) activation rows, accumulating in float32, then
applies the rows' scales. Computed as ``(W @ x^T)^T`` so the weight rows fill the MMA's
wide side. Not exact: the weights are rounded to FP8.

Version 3 (2026-12-07): the MMA's inputs are float16, not bf16. Hopper widens e4m3 to f16
in one ``cvt`` per two weights, to bf16 only through f16 (two more ``cvt`` per two weights);
at 32 rows the same tilings ran 5-25 % faster with f16 inputs on an H100. The activations enter
as ``x / 256`` in float16, exact for every bf16 value of magnitude 2^-9 or more (smaller
ones lose at most 2^-17 absolute), finite up to 2^24; the sums come out times 256. An
activation beyond 2^24 would overflow: the kernel raises a flag when a program's sums are
not finite, and the engine reports it (``nonfinite``). The K loop runs over tile indices,
so every load's offset is a provable multiple of the tile and the loads vectorize and
pipeline (a ``k = split * chunk + i`` with a run-time split made them byte loads, 0.7-0.96
TB/s). The tiling of each shape is measured (``_TUNED``, bench/fp8_gemm_sweep.py) and chosen
by ``pick``, not autotuned in the engine's warm-up.

One launch per GEMM, whatever the split (version 2): each split adds its partial sums into
a float32 buffer kept per output shape (zero between calls), then bumps a counter per column
block; the split that arrives last reads the sums (an atomic read, so from L2, where the
other splits' atomic adds landed), writes the output and leaves the buffer and its counter
at zero for the next call.
"""

from __future__ import annotations

from typing import Any, NamedTuple

_KERNEL: Any = None
_SCRATCH: dict = {}


class Tiling(NamedTuple):
    """One launch's shape: weight rows and K columns per program, K splits, warps, pipeline
    stages, the MMA's input type (``f16``: float16, else the activations' bf16) and whether the
    weight loads are marked evict-first (streamed through L2 once)."""
    bn: int
    bk: int
    split: int
    warps: int = 8
    stages: int = 4
    f16: bool = True
    evict: bool = False


# The fastest of 50 tilings per (BLOCK_M, N, K), the 11B text model's decode shapes, measured on
# an H100 with the weights rotated through 4x its L2 (bench/fp8_gemm_sweep.py,
# bench/results/fp8_gemm_sweep_2026-12-07_h100_v3.json; FP8 bytes read per second).
_TUNED: dict[tuple[int, int, int], Tiling] = {
    (32, 4096, 4096): Tiling(64, 128, 4, 4, 3),  # 11.96 us, 1.403 TB/s
    (32, 4096, 14336): Tiling(64, 256, 2, 4, 4),  # 29.18 us, 2.012 TB/s
    (32, 6144, 4096): Tiling(64, 128, 4, 4, 3),  # 14.91 us, 1.688 TB/s
    (32, 28672, 4096): Tiling(128, 128, 1, 8, 3),  # 51.69 us, 2.272 TB/s
    (32, 128256, 4096): Tiling(128, 128, 1, 8, 3),  # 204.57 us, 2.568 TB/s
    (64, 4096, 4096): Tiling(128, 128, 4, 8, 3),  # 15.66 us, 1.071 TB/s
    (64, 4096, 14336): Tiling(128, 128, 4, 8, 4, evict=True),  # 34.12 us, 1.721 TB/s
    (64, 6144, 4096): Tiling(64, 128, 4, 4, 3, f16=False),  # 19.71 us, 1.277 TB/s
    (64, 28672, 4096): Tiling(128, 128, 1, 4, 4),  # 59.44 us, 1.976 TB/s
    (64, 128256, 4096): Tiling(128, 128, 1, 4, 3),  # 229.52 us, 2.289 TB/s
}


def load_tuned(path) -> int:
    """Take the best tilings of a ``bench/fp8_gemm_sweep.py`` result over the built-in ones
    (benches: to run a fresh sweep's choice before it is written into ``_TUNED``)."""
    import json
    from pathlib import Path

    best = json.loads(Path(path).read_text())["best"]
    for row in best:
        _TUNED[(block_m(row["M"]), row["N"], row["K"])] = Tiling(**row["tiling"])
    return len(best)


def available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def block_m(m: int) -> int:
    return max(16, 1 << (m - 1).bit_length())


def fits(t: Tiling, m: int, n: int, k: int) -> bool:
    """The tiling divides the shape and its pipeline fits the shared memory (H100/H200: 227 KB)."""
    smem = t.stages * (t.bn * t.bk + t.bk * block_m(m) * 2) + (t.bk * block_m(m) * 2 if t.f16 else 0)
    return n % t.bn == 0 and k % (t.bk * t.split) == 0 and smem <= 220 * 1024


def pick(m: int, n: int, k: int) -> Tiling:
    """The measured tiling of this shape, else: 128 weight rows a program, K split in two,
    four or eight while the column blocks alone give the card's 132 multiprocessors less than
    one program each."""
    tuned = _TUNED.get((block_m(m), n, k))
    if tuned is not None and fits(tuned, m, n, k):
        return tuned
    bn = 128 if n % 128 == 0 else 64
    split = 1
    while n // bn * split < 120 and split < 8 and k % (128 * split * 2) == 0:
        split *= 2
    t = Tiling(bn, 128, split, 8 if bn > 64 else 4, 4)
    return t if fits(t, m, n, k) else t._replace(stages=2)


def _jit():
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["split_k"])
    def w8a16_kernel(x_ptr, w_ptr, s_ptr, o_ptr, acc_ptr, cnt_ptr, M, N, K, split_k, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, F16: tl.constexpr, EVICT: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        rows = rm < M
        tiles = K // BLOCK_K // split_k  # K tiles a split; k below is provably a multiple of BLOCK_K, so the
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)  # loads vectorize and pipeline (not at k = i * chunk)
        for t in range(pid_k * tiles, pid_k * tiles + tiles):
            k = t * BLOCK_K
            if EVICT:
                w = tl.load(w_ptr + rn[:, None] * K + (k + rk)[None, :], eviction_policy="evict_first")
            else:
                w = tl.load(w_ptr + rn[:, None] * K + (k + rk)[None, :])
            x = tl.load(x_ptr + rm[:, None] * K + (k + rk)[None, :], mask=rows[:, None], other=0.0)
            if F16:  # e4m3 -> f16 is one cvt per two weights on Hopper (-> bf16 is three)
                xh = (x.to(tl.float32) * (1.0 / 256.0)).to(tl.float16)
                acc = tl.dot(w.to(tl.float16), tl.trans(xh), acc)
            else:
                acc = tl.dot(w.to(x.dtype), tl.trans(x), acc)
        scale = tl.load(s_ptr + rn)
        if F16:
            scale = scale * 256.0
            if tl.sum(tl.where(acc * 0.0 == 0.0, 0, 1)) > 0:  # inf or nan: an activation beyond 256 x f16's range?
                tl.atomic_max(cnt_ptr + N // 64, 1)  # the flag nonfinite() reads (past the column blocks' counters)
        acc = acc * scale[:, None]
        out = o_ptr + rm[None, :] * N + rn[:, None]
        if split_k == 1:
            tl.store(out, acc.to(o_ptr.dtype.element_ty), mask=rows[None, :])
        else:
            part = acc_ptr + rm[None, :] * N + rn[:, None]
            tl.atomic_add(part, acc, mask=rows[None, :], sem="relaxed")
            tl.debug_barrier()  # every thread's partial sums are in before the counter moves
            arrived = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel")
            if arrived == split_k - 1:  # the last split: take the sums out (an atomic read, in L2), leave zeros
                total = tl.atomic_add(part, tl.zeros_like(acc), mask=rows[None, :], sem="acquire")
                tl.store(out, total.to(o_ptr.dtype.element_ty), mask=rows[None, :])
                tl.store(part, tl.zeros_like(acc), mask=rows[None, :])
                tl.store(cnt_ptr + pid_n, 0)

    return w8a16_kernel


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _jit()
    return _KERNEL


def supported(m: int, n: int, k: int) -> bool:
    """Shapes the kernel takes without masks on N and K: N a multiple of 128, K of 1024, M <= 128."""
    return m <= 128 and n % 128 == 0 and k % 1024 == 0


def scratch(device, m: int, n: int):
    """The float32 partial sums [M, N] and the per-column-block counters of one output shape:
    zero between calls (the kernel's last split leaves them so), kept for the process."""
    import torch

    key = (str(device), m, n)
    if key not in _SCRATCH:
        _SCRATCH[key] = (torch.zeros(m, n, device=device, dtype=torch.float32),
                         torch.zeros(n // 64 + 1, device=device, dtype=torch.int32))
    return _SCRATCH[key]


def nonfinite(device) -> bool:
    """Whether any float16-path call on ``device`` since the last ``clear_nonfinite`` summed to
    inf or nan (what an activation beyond 2^24 in magnitude would cause; a bf16 input that is
    already inf or nan too). Reads the flags back: a device sync, for after a batch."""
    return any(bool(cnt[-1]) for (dev, _, _), (_, cnt) in _SCRATCH.items() if dev == str(device))


def clear_nonfinite(device) -> None:
    for (dev, _, _), (_, cnt) in _SCRATCH.items():
        if dev == str(device):
            cnt[-1] = 0


def w8a16(x2d, q, scale, tiling: Tiling | None = None):
    """bf16 ``x2d`` [M, K] times float8 ``q`` [N, K] with float32 per-row ``scale`` [N] -> [M, N]
    in ``x2d``'s dtype (float32 accumulation). ``tiling`` (tests, benches): instead of ``pick``'s."""
    import torch

    m, k = x2d.shape
    n = q.shape[0]
    t = tiling or pick(m, n, k)
    x2d = x2d.contiguous()
    o = torch.empty(m, n, device=x2d.device, dtype=x2d.dtype)
    acc, counters = scratch(x2d.device, m, n)
    _kernel()[(n // t.bn, t.split)](x2d, q, scale, o, acc, counters, m, n, k, t.split, BLOCK_M=block_m(m),
                                    BLOCK_N=t.bn, BLOCK_K=t.bk, F16=t.f16, EVICT=t.evict, num_warps=t.warps,
                                    num_stages=t.stages)
    return o
