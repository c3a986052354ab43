"""A decode step's cross-attention over float8 keys and values (opt-in: ``cross_kv="fp8"``).

At batch 32 a decode step of the 11B model reads 6.7 GB of cross-attention keys and values
(8 layers x 32 rows x 6,404 vision tokens x 8 heads x 128 x 2 x 2 bytes), a quarter of the
step's bytes, and the bf16 attention already reads them at the card's copy rate
(docs/gpu.md). Stored as float8 e4m3 they are half the bytes. They are written once, at the
prefill, and only read afterwards, so they are quantized once: one scale per row and key/value
head for the keys and one for the values (``quantize``: the head's largest magnitude maps to
e4m3's 448), the way FP8 key/value caches usually are.

The kernel is split-K flash decoding: a program per (row, key/value head, split of the vision
tokens) loads the head's ``n_rep`` queries (the query heads that share it, as rows of one small
MMA), streams its share of the float8 keys and values, widens them to float16 in registers
(one ``cvt`` per two values on Hopper), runs both products on the tensor cores with float32
accumulation and keeps an online softmax; a second kernel combines the splits. The keys' scale
goes into the softmax's scale, the values' onto the result. Not exact: the keys and values are
rounded to FP8 (``reference`` is the same math over the dequantized tensors, what the CPU runs
and what the GPU kernel is checked against).

An additive bias (a row whose image has fewer tiles than the batch keeps, when the padding
tiles are not trimmed) is added in natural-log units like SDPA's ``attn_mask``, so a row whose
every key is masked by ``finfo.min`` attends uniformly, as SDPA and HF do.
"""

from __future__ import annotations

from typing import Any

E4M3_MAX = 448.0
_KERNELS: Any = None


def quantize(x):
    """``x`` [B, H, S, D] -> (float8 e4m3 [B, H, S, D], float32 scale [B, H]): one scale per
    row and head, the head's largest magnitude mapping to 448."""
    import torch

    amax = x.abs().amax(dim=(-2, -1)).float().clamp(min=1e-12)
    scale = amax / E4M3_MAX
    q = (x.float() / scale[..., None, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def dequantize(q, scale, dtype):
    return (q.float() * scale[..., None, None]).to(dtype)


def reference(query, k8, k_scale, v8, v_scale, bias, sm_scale: float):
    """SDPA in float32 over the dequantized keys and values: the kernel's math, for the CPU and
    for checks; returned in the query's dtype."""
    import torch
    import torch.nn.functional as F

    k, v = dequantize(k8, k_scale, torch.float32), dequantize(v8, v_scale, torch.float32)
    bias = None if bias is None else bias.float()
    return F.scaled_dot_product_attention(query.float(), k, v, attn_mask=bias, scale=sm_scale).to(query.dtype)


def available(device) -> bool:
    """The Triton kernel runs on CUDA devices where Triton is installed."""
    if getattr(device, "type", str(device)) != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def splits_for(programs: int, keys: int, block_n: int = 128, sms: int = 132) -> int:
    """Splits of the vision tokens per (row, head): at least two programs per multiprocessor,
    each with at least four key blocks. (On an H100 at batch 32, 4 tiles: 2 splits of 128-key
    blocks, 4 warps, 3 stages took 155.6 us a call against 162-243 us for the other 24 tilings
    tried, and bf16 SDPA's 273.9: bench/results/gpu_crosskv_2026-12-07_h100_run1.json.)"""
    split = 1
    while programs * split < 2 * sms and keys // (split * 2) >= 4 * block_n and split < 32:
        split *= 2
    return split


def attention(query, k8, k_scale, v8, v_scale, bias, sm_scale: float, *, split: int | None = None,
              block_n: int = 128, warps: int = 4, stages: int = 3):
    """``query`` [B, H, R, D] (R query heads per key/value head, GQA folded into the rows) over
    float8 ``k8``/``v8`` [B, H, S, D] with scales [B, H]; ``bias`` None or additive [B, 1, 1, S].
    Returns [B, H, R, D] in the query's dtype. ``split``, ``block_n``, ``warps``, ``stages``:
    tests and benches (``splits_for`` picks ``split``)."""
    import torch

    b, h, r, d = query.shape
    s = k8.shape[2]
    if split is None:
        sms = torch.cuda.get_device_properties(query.device).multi_processor_count if query.is_cuda else 132
        split = splits_for(b * h, s, block_n, sms)
    chunk = -(-s // (split * block_n)) * block_n  # keys per split, a multiple of the block
    block_r = max(16, 1 << (r - 1).bit_length())
    query = query.contiguous()
    m = torch.empty(b * h * split * block_r, device=query.device, dtype=torch.float32)
    lsum = torch.empty_like(m)
    acc = torch.empty(b * h * split * block_r, d, device=query.device, dtype=torch.float32)
    out = torch.empty_like(query)
    partial, combine = _kernels()
    has_bias = bias is not None
    partial[(b * h, split)](query, k8, v8, k_scale, v_scale, bias if has_bias else query, m, lsum, acc,
                            s, h, chunk, sm_scale, R=r, BLOCK_R=block_r, D=d, BLOCK_N=block_n,
                            HAS_BIAS=has_bias, num_warps=warps, num_stages=stages)
    combine[(b * h,)](m, lsum, acc, v_scale, out, split, R=r, BLOCK_R=block_r, D=d,
                      SPLIT_P2=max(2, 1 << (split - 1).bit_length()), num_warps=4)
    return out


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _jit()
    return _KERNELS


def _jit():
    import triton
    import triton.language as tl

    @triton.jit
    def fp8_cross_partial(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, bias_ptr, m_ptr, l_ptr, acc_ptr,
                          S, H, chunk, sm_scale, R: tl.constexpr, BLOCK_R: tl.constexpr, D: tl.constexpr,
                          BLOCK_N: tl.constexpr, HAS_BIAS: tl.constexpr):
        bh = tl.program_id(0)
        sp = tl.program_id(1)
        rr = tl.arange(0, BLOCK_R)
        dd = tl.arange(0, D)
        nn = tl.arange(0, BLOCK_N)
        q = tl.load(q_ptr + bh * R * D + rr[:, None] * D + dd[None, :], mask=rr[:, None] < R, other=0.0)
        q = q.to(tl.float16)
        qk_scale = sm_scale * tl.load(ks_ptr + bh)
        base = bh.to(tl.int64) * S * D
        m_i = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_R], dtype=tl.float32)
        acc = tl.zeros([BLOCK_R, D], dtype=tl.float32)
        first = sp * (chunk // BLOCK_N)
        for t in range(first, first + chunk // BLOCK_N):
            keys = t * BLOCK_N + nn
            valid = keys < S
            kt = tl.load(k_ptr + base + keys[:, None] * D + dd[None, :], mask=valid[:, None], other=0.0)
            sc = tl.dot(q, tl.trans(kt.to(tl.float16))) * qk_scale
            if HAS_BIAS:
                sc += tl.load(bias_ptr + (bh // H) * S + keys, mask=valid, other=0.0).to(tl.float32)[None, :]
            sc = tl.where(valid[None, :], sc, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(sc, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a split past the last key
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(sc - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vt = tl.load(v_ptr + base + keys[:, None] * D + dd[None, :], mask=valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), vt.to(tl.float16))
            m_i = m_new
        row = (bh * tl.num_programs(1) + sp) * BLOCK_R + rr
        tl.store(m_ptr + row, m_i)
        tl.store(l_ptr + row, l_i)
        tl.store(acc_ptr + row[:, None] * D + dd[None, :], acc)

    @triton.jit
    def fp8_cross_combine(m_ptr, l_ptr, acc_ptr, vs_ptr, o_ptr, split, R: tl.constexpr, BLOCK_R: tl.constexpr,
                          D: tl.constexpr, SPLIT_P2: tl.constexpr):
        bh = tl.program_id(0)
        ss = tl.arange(0, SPLIT_P2)
        dd = tl.arange(0, D)
        for r in range(R):
            rows = (bh * split + ss) * BLOCK_R + r
            live = ss < split
            m = tl.load(m_ptr + rows, mask=live, other=float("-inf"))
            lsum = tl.load(l_ptr + rows, mask=live, other=0.0)
            top = tl.max(m, 0)
            w = tl.where(m == float("-inf"), 0.0, tl.exp(m - top))
            acc = tl.load(acc_ptr + rows[:, None] * D + dd[None, :], mask=live[:, None], other=0.0)
            o = tl.sum(acc * w[:, None], 0) / tl.sum(lsum * w, 0) * tl.load(vs_ptr + bh)
            tl.store(o_ptr + (bh * R + r) * D + dd, o.to(o_ptr.dtype.element_ty))

    return fp8_cross_partial, fp8_cross_combine
