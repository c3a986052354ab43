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
"""

from __future__ import annotations

from typing import Any

_KERNEL: Any = None


def available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    configs = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk}, num_warps=4, num_stages=s)
               for bn in (64, 128) for bk in (128, 256) for sk in (1, 2, 4) for s in (3, 4)]

    @triton.autotune(configs=configs, key=["M", "N", "K"], reset_to_zero=["o_ptr"])
    @triton.jit
    def w8a16_kernel(x_ptr, w_ptr, s_ptr, o_ptr, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        chunk = K // SPLIT_K
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k in range(pid_k * chunk, (pid_k + 1) * chunk, BLOCK_K):
            w = tl.load(w_ptr + rn[:, None] * K + (k + rk)[None, :])
            x = tl.load(x_ptr + rm[None, :] * K + (k + rk)[:, None], mask=rm[None, :] < M, other=0.0)
            acc = tl.dot(w.to(tl.bfloat16), x, acc)
        acc = acc * tl.load(s_ptr + rn)[:, None]
        ptr = o_ptr + rm[None, :] * N + rn[:, None]
        if SPLIT_K == 1:
            tl.store(ptr, acc, mask=rm[None, :] < M)
        else:
            tl.atomic_add(ptr, acc, mask=rm[None, :] < M)

    _KERNEL = w8a16_kernel
    return _KERNEL


def supported(m: int, n: int, k: int) -> bool:
    """Shapes the kernel takes without masks on N and K: N a multiple of 128, K of 1024, M <= 128."""
    return m <= 128 and n % 128 == 0 and k % 1024 == 0


def w8a16(x2d, q, scale):
    """bf16 ``x2d`` [M, K] times float8 ``q`` [N, K] with float32 per-row ``scale`` [N] -> [M, N]
    in ``x2d``'s dtype (float32 accumulation)."""
    import torch
    import triton

    m, k = x2d.shape
    n = q.shape[0]
    x2d = x2d.contiguous()
    o = torch.zeros(m, n, device=x2d.device, dtype=torch.float32)
    kernel = _kernel()
    kernel[lambda meta: (n // meta["BLOCK_N"], meta["SPLIT_K"])](
        x2d, q, scale, o, m, n, k, BLOCK_M=max(16, triton.next_power_of_2(m)))
    return o.to(x2d.dtype)
