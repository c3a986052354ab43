"""A weight-only FP8 GEMM for decode steps: bf16 activations, float8 e4m3 weights.

A decode step at batch 32 multiplies a few rows of activations by every weight of the model:
it is bound by reading the weights, so half the bytes (FP8) should make it faster. The
``torch._scaled_mm`` path (``Fp8Weight`` with ``kernel="scaled_mm"``) also quantizes the
activations, which costs a kernel per GEMM and, at 32 rows, as much as the saved reads
(docs/gpu.md, "FP8 decode weights"). Here the weights are the only FP8 operand: each
program loads a block of weight rows as float8, widens it to bf16 in registers and runs it
through the tensor cores against the (few, bf16) activation rows, accumulating in float32,
then applies the rows' scales. Computed as ``(W @ x^T)^T`` so the weight rows fill the MMA's
wide side. Triton kernel, autotuned per (M, N, K) on first use (outside a CUDA graph: the
engine's warm-up steps run before it captures). Not exact: the weights are rounded to FP8.

One launch per GEMM, whatever the split. The first version (2026-12-06) split K with float32
atomics into a zeroed buffer and converted it to bf16 afterwards: three kernels a GEMM
(zero, multiply, convert), which at a 4096 x 4096 weight (16.8 MB of FP8, ~4 us at the copy
rate) cost more than the reads saved. Now each split adds its partial sums into a float32
buffer kept per output shape (zero between calls), then bumps a counter per column block;
the split that arrives last reads the sums (an atomic read, so from L2, where the other
splits' atomic adds landed), writes the bf16 output and leaves the buffer and its counter
at zero for the next call. The activation tile is loaded along K, as stored, and transposed in registers.
"""

from __future__ import annotations

from typing import Any

_KERNEL: Any = None
_SCRATCH: dict = {}
_SMEM_BUDGET = 200 * 1024  # bytes of shared memory a program's pipeline may take (H100/H200: 227 KB)


def available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _prune(configs, named_args, **_):
    """Keep the tilings that divide this shape, fit in shared memory and give the card one to
    ~eight waves of programs (a split only where the column blocks alone are too few)."""
    m, n, k = named_args["M"], named_args["N"], named_args["K"]
    block_m = max(16, 1 << (m - 1).bit_length())
    kept = []
    for c in configs:
        bn, bk, sk = c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.kwargs["SPLIT_K"]
        if n % bn or k % (bk * sk):
            continue
        if c.num_stages * (bn * bk + bk * block_m * 2) > _SMEM_BUDGET:
            continue
        programs = n // bn * sk
        if sk > 1 and n // bn >= 264:  # enough column blocks: no split
            continue
        if programs < 96 or programs > 2048:
            continue
        kept.append(c)
    return kept or [c for c in configs if n % c.kwargs["BLOCK_N"] == 0
                    and k % (c.kwargs["BLOCK_K"] * c.kwargs["SPLIT_K"]) == 0][:1]


def _jit():
    import triton
    import triton.language as tl

    @triton.jit
    def w8a16_kernel(x_ptr, w_ptr, s_ptr, o_ptr, acc_ptr, cnt_ptr, M, N, K, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        rows = rm < M
        chunk = K // SPLIT_K
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for i in range(0, chunk, BLOCK_K):
            k = pid_k * chunk + i
            w = tl.load(w_ptr + rn[:, None] * K + (k + rk)[None, :])
            x = tl.load(x_ptr + rm[:, None] * K + (k + rk)[None, :], mask=rows[:, None], other=0.0)
            acc = tl.dot(w.to(x.dtype), tl.trans(x), acc)
        acc = acc * tl.load(s_ptr + rn)[:, None]
        out = o_ptr + rm[None, :] * N + rn[:, None]
        if SPLIT_K == 1:
            tl.store(out, acc.to(o_ptr.dtype.element_ty), mask=rows[None, :])
        else:
            part = acc_ptr + rm[None, :] * N + rn[:, None]
            tl.atomic_add(part, acc, mask=rows[None, :], sem="relaxed")
            tl.debug_barrier()  # every thread's partial sums are in before the counter moves
            arrived = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel")
            if arrived == SPLIT_K - 1:  # the last split: take the sums out (an atomic read, in L2), leave zeros
                total = tl.atomic_add(part, tl.zeros_like(acc), mask=rows[None, :], sem="acquire")
                tl.store(out, total.to(o_ptr.dtype.element_ty), mask=rows[None, :])
                tl.store(part, tl.zeros_like(acc), mask=rows[None, :])
                tl.store(cnt_ptr + pid_n, 0)

    return w8a16_kernel


def _kernel():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton

    configs = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk}, num_warps=4 if bn <= 64 else 8,
                             num_stages=s)
               for bn in (64, 128, 256) for bk in (128, 256) for sk in (1, 2, 4, 8) for s in (3, 4)]
    _KERNEL = triton.autotune(configs=configs, key=["M", "N", "K"], prune_configs_by={"early_config_prune": _prune},
                              )(_jit())
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


def w8a16(x2d, q, scale, kernel=None):
    """bf16 ``x2d`` [M, K] times float8 ``q`` [N, K] with float32 per-row ``scale`` [N] -> [M, N]
    in ``x2d``'s dtype (float32 accumulation). ``kernel`` (tests): a ``_jit()`` kernel and its
    tiling ``(BLOCK_N, BLOCK_K, SPLIT_K)`` instead of the autotuned one."""
    import torch
    import triton

    m, k = x2d.shape
    n = q.shape[0]
    x2d = x2d.contiguous()
    o = torch.empty(m, n, device=x2d.device, dtype=x2d.dtype)
    acc, counters = scratch(x2d.device, m, n)
    block_m = max(16, triton.next_power_of_2(m))
    if kernel is not None:
        fn, (bn, bk, sk) = kernel
        fn[(n // bn, sk)](x2d, q, scale, o, acc, counters, m, n, k, BLOCK_M=block_m, BLOCK_N=bn, BLOCK_K=bk,
                          SPLIT_K=sk)
        return o
    _kernel()[lambda meta: (n // meta["BLOCK_N"], meta["SPLIT_K"])](
        x2d, q, scale, o, acc, counters, m, n, k, BLOCK_M=block_m)
    return o
