"""A decode step's attention over float8 keys and values (opt-in: ``cross_kv="fp8"``, ``self_kv="fp8"``).

At batch 32 a decode step of the 11B model reads 6.7 GB of cross-attention keys and values
(8 layers x 32 rows x 6,404 vision tokens x 8 heads x 128 x 2 x 2 bytes) and ~3 GB of the
self-attention cache, a third of the step's bytes, and bf16 SDPA already reads them at the
card's copy rate (docs/gpu.md). Stored as float8 e4m3 they are half the bytes.

Scales: the image's keys/values are written once, at the prefill, and only read afterwards, so
they get one scale per row and key/value head (``quantize``: the head's largest magnitude maps
to e4m3's 448). The self-attention cache grows by a token a step, so each token gets its own
scale per head (``quantize_tokens``; ``write_token`` quantizes a step's new key and value and
writes them at the step's cache slot in one kernel).

The attention kernel is split-K flash decoding: a program per (row, key/value head, split of the
keys) loads the head's ``n_rep`` queries (the query heads that share it, as rows of one small
MMA), streams its share of the float8 keys and values, widens them to float16 in registers
(one ``cvt`` per two values on Hopper), runs both products on the tensor cores with float32
accumulation and keeps an online softmax. With one split it writes the output itself; with
several a second kernel combines them. A per-head key scale goes into the softmax's scale and a
per-head value scale onto the result; per-token key scales multiply the scores, per-token value
scales the probabilities (normalised by the block's largest, so float16 does not underflow).
Not exact: the keys and values are rounded to FP8 (``reference`` is the same math over the
dequantized tensors in float32, what the CPU runs and what the GPU kernel is checked against).

An additive mask (the self-attention's -inf on slots a row may not see; for the image, a row
whose image has fewer tiles than the batch keeps) is added in natural-log units like SDPA's
``attn_mask``, so a row whose every key is masked by ``finfo.min`` attends uniformly, as SDPA
and HF do.
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


def quantize_tokens(x):
    """``x`` [..., S, D] -> (float8 e4m3, float32 scale [..., S]): one scale per token and head."""
    import torch

    amax = x.abs().amax(dim=-1).float().clamp(min=1e-12)
    scale = amax / E4M3_MAX
    q = (x.float() / scale[..., None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def dequantize(q, scale, dtype):
    """Per-head ``scale`` [B, H] or per-token [B, H, S]."""
    s = scale[..., None, None] if scale.dim() == q.dim() - 2 else scale[..., None]
    return (q.float() * s).to(dtype)


def reference(query, k8, k_scale, v8, v_scale, bias, sm_scale: float):
    """SDPA in float32 over the dequantized keys and values: the kernel's math, for the CPU and
    for checks; returned in the query's dtype."""
    import torch
    import torch.nn.functional as F

    k, v = dequantize(k8, k_scale, torch.float32), dequantize(v8, v_scale, torch.float32)
    bias = None if bias is None else bias.float()
    return F.scaled_dot_product_attention(query.float(), k, v, attn_mask=bias, scale=sm_scale).to(query.dtype)


def write_token_reference(k, v, k8, v8, k_scale, v_scale, cur) -> None:
    """Quantize a step's key and value [B, H, 1, D] per token and write them at cache slot ``cur``
    (a one-element long tensor) of ``k8``/``v8`` [B, H, L, D] and ``k_scale``/``v_scale`` [B, H, L]."""
    import torch

    for x, cache, scales in ((k, k8, k_scale), (v, v8, v_scale)):
        q, s = quantize_tokens(x)
        cache.view(torch.uint8).index_copy_(2, cur, q.view(torch.uint8))
        scales.index_copy_(2, cur, s)


def write_token(k, v, k8, v8, k_scale, v_scale, cur) -> None:
    """``write_token_reference`` in one Triton kernel (a program per row and head)."""
    b, h, _, d = k.shape
    assert k.stride(-1) == 1 and v.stride(-1) == 1
    _kernels()[2][(b * h, 2)](k, v, k8, v8, k_scale, v_scale, cur, k8.shape[2], h, k.stride(0), k.stride(1),
                            v.stride(0), v.stride(1), D=d, num_warps=1)


def available(device) -> bool:
    """The Triton kernels run on CUDA devices where Triton is installed."""
    if getattr(device, "type", str(device)) != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def splits_for(programs: int, keys: int, block_n: int = 128, sms: int = 132) -> int:
    """Splits of the keys per (row, head): at least one program per multiprocessor, each with at
    least four key blocks. (On an H100 at batch 32, 4 tiles: one split of 128-key blocks, 4 warps,
    3 stages took 145-150 us a call, two splits 155-156, four 163, against bf16 SDPA's 274:
    bench/results/gpu_crosskv_2026-12-07_h100_run{1,2}.json, gpu_fp8kv_2026-12-07_h100_run{1,2}.json.)"""
    split = 1
    while programs * split < sms and keys // (split * 2) >= 4 * block_n and split < 32:
        split *= 2
    return split


def attention(query, k8, k_scale, v8, v_scale, bias, sm_scale: float, *, split: int | None = None,
              block_n: int = 128, warps: int = 4, stages: int = 3):
    """``query`` [B, H, R, D] (R query heads per key/value head, GQA folded into the rows) over
    float8 ``k8``/``v8`` [B, H, S, D] with scales [B, H] (per head) or [B, H, S] (per token);
    ``bias`` None or additive [B, 1, 1, S], contiguous. Returns [B, H, R, D] in the query's dtype.
    ``split``, ``block_n``, ``warps``, ``stages``: tests and benches (``splits_for`` picks ``split``)."""
    import torch

    b, h, r, d = query.shape
    s = k8.shape[2]
    if split is None:
        sms = torch.cuda.get_device_properties(query.device).multi_processor_count if query.is_cuda else 132
        split = splits_for(b * h, s, block_n, sms)
    chunk = -(-s // (split * block_n)) * block_n  # keys per split, a multiple of the block
    block_r = max(16, 1 << (r - 1).bit_length())
    query = query.contiguous()
    out = torch.empty_like(query)
    partial, combine, _ = _kernels()
    per_token = k_scale.dim() == 3
    rows = b * h * split * block_r if split > 1 else 1
    m = torch.empty(rows, device=query.device, dtype=torch.float32)
    lsum = torch.empty_like(m)
    acc = torch.empty(rows, d if split > 1 else 1, device=query.device, dtype=torch.float32)
    partial[(b * h, split)](query, k8, v8, k_scale, v_scale, query if bias is None else bias, m, lsum, acc, out,
                            s, h, chunk, sm_scale, R=r, BLOCK_R=block_r, D=d, BLOCK_N=block_n,
                            HAS_BIAS=bias is not None, PER_TOKEN=per_token, DIRECT=split == 1,
                            num_warps=warps, num_stages=stages)
    if split > 1:
        combine[(b * h,)](m, lsum, acc, v_scale, out, split, R=r, BLOCK_R=block_r, D=d,
                          SPLIT_P2=max(2, 1 << (split - 1).bit_length()), PER_TOKEN=per_token, num_warps=4)
    return out


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = (_jit_partial(), _jit_combine(), _jit_write())
    return _KERNELS


def _jit_partial():
    import triton
    import triton.language as tl

    @triton.jit
    def fp8_attn_partial(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, bias_ptr, m_ptr, l_ptr, acc_ptr, o_ptr,
                         S, H, chunk, sm_scale, R: tl.constexpr, BLOCK_R: tl.constexpr, D: tl.constexpr,
                         BLOCK_N: tl.constexpr, HAS_BIAS: tl.constexpr, PER_TOKEN: tl.constexpr,
                         DIRECT: tl.constexpr):
        bh = tl.program_id(0)
        sp = tl.program_id(1)
        rr, dd, nn = tl.arange(0, BLOCK_R), tl.arange(0, D), tl.arange(0, BLOCK_N)
        q = tl.load(q_ptr + bh * R * D + rr[:, None] * D + dd[None, :], mask=rr[:, None] < R, other=0.0).to(tl.float16)
        qk_scale = sm_scale if PER_TOKEN else sm_scale * tl.load(ks_ptr + bh)
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
            if PER_TOKEN:
                sc = sc * tl.load(ks_ptr + bh.to(tl.int64) * S + keys, mask=valid, other=0.0)[None, :]
            if HAS_BIAS:
                sc += tl.load(bias_ptr + (bh // H) * S + keys, mask=valid, other=0.0).to(tl.float32)[None, :]
            sc = tl.where(valid[None, :], sc, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(sc, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing seen yet (a masked or empty block)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(sc - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vt = tl.load(v_ptr + base + keys[:, None] * D + dd[None, :], mask=valid[:, None], other=0.0)
            if PER_TOKEN:  # the values' scales onto the probabilities, normalised so float16 keeps them
                vs = tl.load(vs_ptr + bh.to(tl.int64) * S + keys, mask=valid, other=0.0)
                top = tl.maximum(tl.max(vs, 0), 1e-30)
                pv = tl.dot((p * (vs / top)[None, :]).to(tl.float16), vt.to(tl.float16)) * top
            else:
                pv = tl.dot(p.to(tl.float16), vt.to(tl.float16))
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        if DIRECT:  # one split: the output itself
            o = acc / l_i[:, None]
            if not PER_TOKEN:
                o = o * tl.load(vs_ptr + bh)
            tl.store(o_ptr + bh * R * D + rr[:, None] * D + dd[None, :], o.to(o_ptr.dtype.element_ty),
                     mask=rr[:, None] < R)
        else:
            row = (bh * tl.num_programs(1) + sp) * BLOCK_R + rr
            tl.store(m_ptr + row, m_i)
            tl.store(l_ptr + row, l_i)
            tl.store(acc_ptr + row[:, None] * D + dd[None, :], acc)

    return fp8_attn_partial


def _jit_combine():
    import triton
    import triton.language as tl

    @triton.jit
    def fp8_attn_combine(m_ptr, l_ptr, acc_ptr, vs_ptr, o_ptr, split, R: tl.constexpr, BLOCK_R: tl.constexpr,
                         D: tl.constexpr, SPLIT_P2: tl.constexpr, PER_TOKEN: tl.constexpr):
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
            o = tl.sum(acc * w[:, None], 0) / tl.sum(lsum * w, 0)
            if not PER_TOKEN:
                o = o * tl.load(vs_ptr + bh)
            tl.store(o_ptr + (bh * R + r) * D + dd, o.to(o_ptr.dtype.element_ty))

    return fp8_attn_combine


def _jit_write():
    import triton
    import triton.language as tl

    @triton.jit
    def fp8_write_token(k_ptr, v_ptr, k8_ptr, v8_ptr, ks_ptr, vs_ptr, cur_ptr, L, H, k_sb, k_sh, v_sb, v_sh,
                        D: tl.constexpr):
        bh = tl.program_id(0)  # program (b, h, 0) writes the key, (b, h, 1) the value
        b, h = bh // H, bh % H
        at = bh.to(tl.int64) * L + tl.load(cur_ptr)
        dd = tl.arange(0, D)
        if tl.program_id(1) == 0:
            x = tl.load(k_ptr + b * k_sb + h * k_sh + dd).to(tl.float32)
            dst, scales = k8_ptr, ks_ptr
        else:
            x = tl.load(v_ptr + b * v_sb + h * v_sh + dd).to(tl.float32)
            dst, scales = v8_ptr, vs_ptr
        scale = tl.maximum(tl.max(tl.abs(x), 0), 1e-12) / 448.0
        y = tl.minimum(tl.maximum(x / scale, -448.0), 448.0)
        tl.store(dst + at * D + dd, y.to(dst.dtype.element_ty))
        tl.store(scales + at, scale)

    return fp8_write_token
