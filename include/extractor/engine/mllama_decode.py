"""One Mllama decode step over a static cache, written against the HF model's own weights.

The step reproduces ``MllamaTextModel`` for a single new token per row, op for op (same
float32 RMSNorm, same rotary tables, same gate tanh and row mask), but with every tensor
it touches allocated once: that is what lets ``torch.cuda.CUDAGraph`` capture it and
replay ~1,000 kernels with one launch and no host sync.

Grouped-query attention is folded into the query length: with one new token per row,
the ``n_rep`` query heads that share a key/value head become ``n_rep`` query rows of
that head ([B, kv_heads, n_rep, head_dim]), so SDPA sees plain multi-head attention and
never copies the cache with ``repeat_kv``. Query head ``j`` uses key/value head
``j // n_rep`` in HF, which is exactly the row-major reshape of ``[B, 1, heads*dim]``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from extractor.engine import fp8_gemm


@dataclass
class LayerWeights:
    """The tensors of one text decoder layer (views of the HF parameters, never copies)."""

    cross: bool
    ln1: Any
    ln2: Any
    wq: Any
    wk: Any
    wv: Any
    wo: Any
    wg: Any
    wu: Any
    wd: Any
    wqkv: Any = None  # q|k|v rows in one tensor (self-attention, when fused)
    wgu: Any = None  # gate|up rows in one tensor (when fused)
    q_norm: Any = None
    gate_attn: Any = None  # tanh already applied
    gate_mlp: Any = None


@dataclass
class TextWeights:
    embed: Any
    norm: Any
    lm_head: Any
    layers: list[LayerWeights]
    eps: float
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    inv_freq: Any
    attention_scaling: float
    fused: bool = False
    ops: Any = None  # DecodeOps: the elementwise pieces, eager or torch.compile'd


@dataclass
class DecodeOps:
    """The small elementwise parts of a step. Eager they are ~8 kernels per RMSNorm and ~10
    per rotary pair; ``compiled()`` lets Inductor fuse each into one or two kernels."""

    rms: Any
    rope: Any
    act: Any
    quant: Any = None  # activation quantization for FP8 GEMMs (quantize_rows)
    add_rms: Any = None  # residual add (gated, row-masked) and the next RMSNorm: add_rms_norm

    @classmethod
    def eager(cls) -> DecodeOps:
        return cls(rms=rms_norm, rope=apply_rope, act=silu_mul, quant=quantize_rows, add_rms=add_rms_norm)

    @classmethod
    def compiled(cls, fuse_add_norm: bool = True) -> DecodeOps:
        """``fuse_add_norm``: each residual add (with a cross layer's gate and row mask) and
        the RMSNorm after it become one kernel instead of two to four."""
        import torch

        opts = dict(fullgraph=True)  # static for the first shape, dynamic after a change
        rms = torch.compile(rms_norm, **opts)
        return cls(rms=rms, rope=torch.compile(apply_rope, **opts),
                   act=torch.compile(silu_mul, **opts), quant=torch.compile(quantize_rows, **opts),
                   add_rms=torch.compile(add_rms_norm, **opts) if fuse_add_norm else _add_then(rms))


@dataclass
class Fp8Weight:
    """A decode GEMM's weight in float8 e4m3 with one float32 scale per output row: half the
    bytes of bf16 for a step that is bound by reading weights. The bf16 original stays in
    the HF module (the prefill runs HF's forward)."""

    q: Any      # [N, K] float8_e4m3fn, row-major (its .t() is the column-major mat2 _scaled_mm wants)
    scale: Any  # [1, N] float32
    kernel: str = "scaled_mm"  # or "w8a16": weight-only, bf16 activations (engine/fp8_gemm.py)

    @property
    def shape(self):
        return self.q.shape

    def numel(self) -> int:
        return self.q.numel()

    def element_size(self) -> int:
        return 1

    @classmethod
    def of(cls, weight, per_row: bool = True, kernel: str = "scaled_mm") -> Fp8Weight:
        """``per_row``: one scale per output row (and per activation row at run time);
        otherwise one scale for the tensor (cuBLASLt's native FP8 GEMM)."""
        import torch

        w = weight.detach().to(torch.float32)
        amax = w.abs().amax(dim=1) if per_row else w.abs().amax().reshape(1)
        scale = amax.clamp(min=1e-12) / _FP8_MAX
        q = (w / (scale[:, None] if per_row else scale)).clamp(-_FP8_MAX, _FP8_MAX).to(torch.float8_e4m3fn)
        return cls(q=q.contiguous(), scale=scale[None, :].contiguous() if per_row else scale.reshape(()),
                   kernel=kernel if per_row else "scaled_mm")


_FP8_MAX = 448.0  # largest finite float8 e4m3fn


def quantize_rows(x2d):
    """Activations [M, K] -> (float8 e4m3 [M, K], float32 scale [M, 1]), one scale per row."""
    import torch

    scale = x2d.abs().amax(dim=-1, keepdim=True).to(torch.float32).clamp(min=1e-12) / _FP8_MAX
    return (x2d.to(torch.float32) / scale).to(torch.float8_e4m3fn), scale


def quantize_tensor(x2d):
    """Activations [M, K] -> (float8 e4m3 [M, K], float32 scalar scale)."""
    import torch

    scale = x2d.abs().amax().to(torch.float32).clamp(min=1e-12) / _FP8_MAX
    return (x2d.to(torch.float32) / scale).to(torch.float8_e4m3fn), scale


def linear(x, weight, quant=quantize_rows):
    """``F.linear(x, weight)`` for a plain tensor; for an ``Fp8Weight`` a row-scaled FP8
    GEMM (``torch._scaled_mm``: activations quantized per row, weights per output row,
    accumulated in float32, written in ``x``'s dtype)."""
    import torch
    import torch.nn.functional as F

    if not isinstance(weight, Fp8Weight):
        return F.linear(x, weight)
    x2d = x.reshape(-1, x.shape[-1])
    if weight.kernel == "w8a16" and x.is_cuda and fp8_gemm.supported(x2d.shape[0], *weight.q.shape):
        out = fp8_gemm.w8a16(x2d, weight.q, weight.scale[0])
        return out.reshape(*x.shape[:-1], out.shape[-1])
    xq, xs = quant(x2d) if weight.scale.dim() else quantize_tensor(x2d)
    out = torch._scaled_mm(xq, weight.q.t(), scale_a=xs, scale_b=weight.scale, out_dtype=x.dtype)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def text_model_of(model):
    """The ``MllamaTextModel`` inside a ``MllamaForConditionalGeneration`` (transformers 5)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "language_model"):
        return inner.language_model
    raise TypeError(f"{type(model).__name__} is not an Mllama conditional-generation model")


def _fuse_rows(linears) -> Any:
    """Concatenate the weights of bias-free ``nn.Linear`` modules into one tensor and make
    each module's weight a view of its rows: one GEMM instead of several at decode, with
    no extra memory and the HF forward (used for prefill) unchanged."""
    import torch

    first = linears[0].weight.data
    rows = sum(lin.weight.shape[0] for lin in linears)
    offset, ptr = first.storage_offset(), first.untyped_storage().data_ptr()
    for lin in linears:  # already fused by an earlier engine: hand out the same rows again
        wt = lin.weight.data
        if wt.untyped_storage().data_ptr() != ptr or wt.storage_offset() != offset or not wt.is_contiguous():
            break
        offset += wt.numel()
    else:
        return first.as_strided((rows, first.shape[1]), (first.shape[1], 1), first.storage_offset())
    fused = torch.cat([lin.weight.data for lin in linears], dim=0)
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = fused[start:start + rows]
        start += rows
    return fused


def collect_weights(model, *, fuse: bool, fp8: bool | str = False) -> TextWeights:
    """Gather the text model's weights; with ``fuse`` re-lay q|k|v and gate|up contiguously;
    with ``fp8`` every GEMM a decode step runs (and the LM head) gets an ``Fp8Weight`` copy
    (``True`` / ``"rowwise"``: per-row scales; ``"tensorwise"``: one scale per tensor;
    ``"weight-only"``: per-row scales, bf16 activations, ``fp8_gemm.w8a16`` on CUDA)."""
    import torch

    text = text_model_of(model)
    cfg = text.config
    layers = []
    for idx, layer in enumerate(text.layers):
        cross = idx in cfg.cross_attention_layers
        attn = layer.cross_attn if cross else layer.self_attn
        mlp = layer.mlp
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj,
                    mlp.down_proj):
            if getattr(lin, "bias", None) is not None or not isinstance(lin.weight, torch.Tensor) \
                    or lin.weight.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise TypeError("the static engine needs plain bf16/fp16/fp32 linear layers "
                                "(quantised models go through generate)")
        wqkv = wgu = None
        if fuse:  # the cross layers' k/v projections only run at prefill: nothing to fuse there
            wqkv = None if cross else _fuse_rows([attn.q_proj, attn.k_proj, attn.v_proj])
            wgu = _fuse_rows([mlp.gate_proj, mlp.up_proj])
        lw = LayerWeights(cross=cross, ln1=layer.input_layernorm.weight,
                          ln2=layer.post_attention_layernorm.weight, wq=attn.q_proj.weight,
                          wk=attn.k_proj.weight, wv=attn.v_proj.weight, wo=attn.o_proj.weight,
                          wg=mlp.gate_proj.weight, wu=mlp.up_proj.weight, wd=mlp.down_proj.weight,
                          wqkv=wqkv, wgu=wgu)
        if cross:
            lw.q_norm = attn.q_norm.weight
            lw.gate_attn = layer.cross_attn_attn_gate.tanh()
            lw.gate_mlp = layer.cross_attn_mlp_gate.tanh()
        layers.append(lw)
    rotary = text.rotary_emb
    per_row = fp8 != "tensorwise"
    kernel = "w8a16" if fp8 == "weight-only" else "scaled_mm"
    if fp8:
        for lw in layers:
            to_fp8(lw, per_row=per_row, kernel=kernel)
    lm_head = Fp8Weight.of(model.lm_head.weight, per_row=per_row, kernel=kernel) if fp8 else model.lm_head.weight
    return TextWeights(embed=text.embed_tokens.weight, norm=text.norm.weight, lm_head=lm_head,
                       layers=layers, eps=cfg.rms_norm_eps, num_heads=cfg.num_attention_heads,
                       num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.hidden_size // cfg.num_attention_heads,
                       hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       inv_freq=rotary.inv_freq, attention_scaling=float(rotary.attention_scaling), fused=fuse,
                       ops=DecodeOps.eager())


def to_fp8(lw: LayerWeights, per_row: bool = True, kernel: str = "scaled_mm") -> None:
    """Swap the weights one decode step multiplies by for FP8 copies (fused ones when fused)."""
    names = ["wo", "wd"] + (["wgu"] if lw.wgu is not None else ["wg", "wu"])
    if lw.cross:
        names.append("wq")
    else:
        names += ["wqkv"] if lw.wqkv is not None else ["wq", "wk", "wv"]
    for name in names:
        setattr(lw, name, Fp8Weight.of(getattr(lw, name), per_row=per_row, kernel=kernel))


def rotary_tables(w: TextWeights, length: int, dtype, device):
    """cos/sin for positions 0..length-1, computed as ``MllamaRotaryEmbedding`` does
    (float32 product of position and inverse frequency, doubled, scaled, then cast)."""
    import torch

    pos = torch.arange(length, device=device, dtype=torch.float32)
    freqs = pos[:, None] * w.inv_freq.to(device=device, dtype=torch.float32)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * w.attention_scaling).to(dtype), (emb.sin() * w.attention_scaling).to(dtype)


def rms_norm(x, weight, eps: float):
    import torch

    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm(h, d, weight, eps: float, gate=None, row_mask=None, rms=None):
    """``h + gate * (row_mask * d)`` (the factors where given, in HF's order) and its RMSNorm
    (``rms``, default ``rms_norm``): the residual stream after a sublayer and the normed
    input of the next one."""
    if row_mask is not None:
        d = row_mask * d
    h = h + (d if gate is None else gate * d)
    return h, (rms or rms_norm)(h, weight, eps)


def _add_then(rms):
    """``add_rms_norm`` with the add eager and only the norm through ``rms`` (the step
    before the fusion, kept to measure it)."""
    return functools.partial(add_rms_norm, rms=rms)


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(q, k, cos, sin):
    """HF's ``apply_rotary_pos_emb`` with cos/sin already shaped to broadcast."""
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def silu_mul(g, u):
    import torch.nn.functional as F

    return F.silu(g) * u


@dataclass
class DecodeState:
    """Every tensor one decode step reads or writes; shapes fixed for a batch's lifetime.

    ``cur`` is the cache slot of the token being fed (the same for all rows of a
    left-padded batch; the cache is a ring, so ``cur`` wraps: a row's own positions,
    prompt and answer, never span more than the cache's length); ``pos`` its rotary
    position per row (frozen once the row finished). Both live on the device so a
    captured graph can advance them.
    """

    tok: Any            # [B] long, token fed this step
    pos: Any            # [B] long
    cur: Any            # [1] long
    self_valid: Any     # [B, L] bool, which cache slots a row may attend to
    self_k: list        # per self-attn layer [B, kv, L, D]
    self_v: list
    cross_k: list       # per cross-attn layer [B, kv, S, D] (None where the batch has no image)
    cross_v: list
    cross_bias: Any     # [B, 1, 1, S] additive, or None when it is all zeros
    row_mask: Any       # [B, 1, 1] full_text_row_masked_out_mask of the decode token
    finished: Any       # [B] bool: the row stopped (EOS, or its length limit)
    out: Any            # [B, max_new + 1] long: column j = the row's j-th new token (the last is scratch)
    logp: Any           # [B, max_new + 1] float32 log-probability of each chosen token, or None
    eos: Any            # [E] long
    min_new: Any        # [B] long: EOS is impossible before a row has this many tokens
    row_step: Any       # [B] long: how many tokens each row has (rows join at different steps)
    max_new_row: Any    # [B] long: each row's length limit
    pad_id: int
    cos: Any            # [Lpos, D]
    sin: Any
    record_logits: list | None = None  # debug (eager only): collects each step's float32 logits
    # Constrained decoding (a grammar's mask each step): the step stops at the logits, which
    # wait in ``logits`` until the host has filled ``allow`` (packed int32 bitmask [B, words],
    # bit set = token allowed); ``select_next`` then masks and chooses. None when unconstrained.
    logits: Any = None   # [B, V] float32
    allow: Any = None    # [B, ceil(V / 32)] int32
    bit_shifts: Any = None  # [32] int32: 0..31
    # Float8 keys/values (``cross_kv="fp8"``, ``self_kv="fp8"``): ``cross_k``/``cross_v`` (``self_k``/
    # ``self_v``) are float8 e4m3 and these their float32 scales, per row and head [B, kv] (per row,
    # head and cache slot [B, kv, L]); ``fp8_attn`` the attention over them and ``fp8_write`` the
    # step's key/value write (``engine/fp8_attention.py``: Triton on CUDA, the float32 reference elsewhere).
    cross_k_scale: list | None = None
    cross_v_scale: list | None = None
    self_k_scale: list | None = None
    self_v_scale: list | None = None
    fp8_attn: Any = None
    fp8_write: Any = None


def decode_step(w: TextWeights, st: DecodeState) -> None:
    """Feed ``st.tok`` at ``st.pos`` / slot ``st.cur``, write the greedy next token to
    ``st.out`` (each row's next column) and advance the state. Allocation-free in shape, host-sync free."""
    import torch
    import torch.nn.functional as F

    h = F.embedding(st.tok, w.embed)[:, None, :]               # [B, 1, H]
    cos = st.cos.index_select(0, st.pos)[:, None, None, :]      # [B, 1, 1, D]
    sin = st.sin.index_select(0, st.pos)[:, None, None, :]
    st.self_valid.index_fill_(1, st.cur, True)                  # the new token sees itself
    # One additive mask for every self-attention layer of the step (SDPA would turn a boolean
    # mask into this same 0 / -inf tensor in every call: two kernels per layer).
    self_mask = torch.zeros(st.self_valid.shape, dtype=h.dtype, device=h.device)
    self_mask = self_mask.masked_fill_(~st.self_valid, float("-inf"))[:, None, None, :]
    # The residual stream ``h`` and the normed input of the next sublayer come out of one
    # add-and-norm (``ops.add_rms``); ``pending`` is the last MLP's output and factors, added
    # once the next layer (or the final norm) says which norm follows.
    pending: tuple | None = None
    si = ci = 0
    for lw in w.layers:
        if lw.cross:
            ci += 1
            if st.cross_k[ci - 1] is None:  # HF skips cross layers when the batch carries no image
                continue
            h, pending = _cross_layer(w, lw, st, h, pending, ci - 1)
        else:
            h, pending = _self_layer(w, lw, st, h, pending, si, (cos, sin, self_mask))
            si += 1
    h, x = _enter(w, h, pending, w.norm)
    logits = linear(x, w.lm_head, w.ops.quant)[:, 0].to(torch.float32)
    if st.record_logits is not None:
        st.record_logits.append(logits.clone())
    if st.logits is None:
        select_next(logits, st)
    else:  # constrained: the choice waits for the host's mask (select_next on st.logits)
        st.logits.copy_(logits)
    st.pos.add_((~st.finished).long())  # a finished row waits for its slot to be refilled
    st.cur.add_(1).remainder_(st.self_valid.shape[1])  # a ring: refilled batches run past the end


def _enter(w: TextWeights, h, pending, norm):
    """The residual stream with the last MLP's output added, and its RMSNorm by ``norm``."""
    if pending is None:
        return h, w.ops.rms(h, norm, w.eps)
    return w.ops.add_rms(h, pending[0], norm, w.eps, pending[1], pending[2])


def _self_layer(w: TextWeights, lw: LayerWeights, st: DecodeState, h, pending, si: int, rope_mask):
    """One self-attention decoder layer: writes the token's key/value to cache slot ``st.cur``;
    returns the residual stream after attention and the MLP's output, still to be added."""
    import torch.nn.functional as F

    cos, sin, self_mask = rope_mask
    ops, bsz = w.ops, h.shape[0]
    nkv, nrep, hd = w.num_kv_heads, w.num_heads // w.num_kv_heads, w.head_dim
    h, x = _enter(w, h, pending, lw.ln1)
    if lw.wqkv is not None:
        q, k, v = linear(x, lw.wqkv, ops.quant).split([w.num_heads * hd, nkv * hd, nkv * hd], dim=-1)
    else:
        q, k, v = linear(x, lw.wq, ops.quant), linear(x, lw.wk, ops.quant), linear(x, lw.wv, ops.quant)
    q, k = ops.rope(q.view(bsz, nkv, nrep, hd), k.view(bsz, nkv, 1, hd), cos, sin)
    if st.self_k_scale is None:
        st.self_k[si].index_copy_(2, st.cur, k)
        st.self_v[si].index_copy_(2, st.cur, v.reshape(bsz, nkv, 1, hd))
        a = F.scaled_dot_product_attention(q, st.self_k[si], st.self_v[si], attn_mask=self_mask, scale=hd ** -0.5)
    else:  # float8 cache: the new key/value quantized per token as they are written
        st.fp8_write(k, v.reshape(bsz, nkv, 1, hd), st.self_k[si], st.self_v[si], st.self_k_scale[si],
                     st.self_v_scale[si], st.cur)
        a = st.fp8_attn(q, st.self_k[si], st.self_k_scale[si], st.self_v[si], st.self_v_scale[si], self_mask,
                        hd ** -0.5)
    h, x = ops.add_rms(h, linear(a.reshape(bsz, 1, w.num_heads * hd), lw.wo, ops.quant), lw.ln2, w.eps)
    return h, (_mlp(x, lw, w), None, None)


def _cross_layer(w: TextWeights, lw: LayerWeights, st: DecodeState, h, pending, ci: int):
    """One cross-attention layer over the image's cached keys/values (tanh gates, HF's row
    mask on the MLP); returns the residual stream and the gated MLP output, still to be added."""
    import torch.nn.functional as F

    ops, bsz = w.ops, h.shape[0]
    nkv, nrep, hd = w.num_kv_heads, w.num_heads // w.num_kv_heads, w.head_dim
    h, x = _enter(w, h, pending, lw.ln1)
    q = ops.rms(linear(x, lw.wq, ops.quant).view(bsz, nkv, nrep, hd), lw.q_norm, w.eps)
    if st.cross_k_scale is None:
        a = F.scaled_dot_product_attention(q, st.cross_k[ci], st.cross_v[ci], attn_mask=st.cross_bias,
                                           scale=hd ** -0.5)
    else:
        a = st.fp8_attn(q, st.cross_k[ci], st.cross_k_scale[ci], st.cross_v[ci], st.cross_v_scale[ci],
                        st.cross_bias, hd ** -0.5)
    out = linear(a.reshape(bsz, 1, w.num_heads * hd), lw.wo, ops.quant)
    h, x = ops.add_rms(h, out, lw.ln2, w.eps, lw.gate_attn)
    return h, (_mlp(x, lw, w), lw.gate_mlp, st.row_mask)


def _mlp(x, lw: LayerWeights, w: TextWeights):

    if lw.wgu is not None:
        g, u = linear(x, lw.wgu, w.ops.quant).split(w.intermediate_size, dim=-1)
    else:
        g, u = linear(x, lw.wg, w.ops.quant), linear(x, lw.wu, w.ops.quant)
    return linear(w.ops.act(g, u), lw.wd, w.ops.quant)


def select_next(logits, st) -> None:
    """Greedy choice with generate's min-new-tokens rule, the grammar's mask when there is
    one, and finished-row padding, per row: writes ``st.out[r, st.row_step[r]]`` (and
    ``st.logp``), advances each live row's ``row_step``, updates ``st.finished`` (EOS or the
    row's length limit) and ``st.tok``. ``st`` may be any object with these tensors (a
    sub-batch of rows joining a running batch uses a small stand-in)."""
    import torch

    live = ~st.finished
    # MinNewTokensLengthLogitsProcessor: EOS is impossible before min_new tokens exist.
    blocked = (st.row_step < st.min_new).to(logits.dtype) * torch.finfo(logits.dtype).min
    logits.index_add_(1, st.eos, blocked[:, None].expand(logits.shape[0], st.eos.shape[0]).contiguous())
    if st.allow is not None:  # the grammar's mask: bit j of word i allows token 32 * i + j
        bits = (st.allow.unsqueeze(-1) >> st.bit_shifts) & 1
        logits.masked_fill_(bits.reshape(logits.shape[0], -1)[:, :logits.shape[1]] == 0, float("-inf"))
    nxt = logits.argmax(dim=-1)
    col = st.row_step[:, None]
    if st.logp is not None:  # the chosen token's log-probability: max logit - logsumexp (0 once finished)
        chosen = logits.amax(dim=-1) - torch.logsumexp(logits, dim=-1)
        st.logp.scatter_(1, col, torch.where(live, chosen, 0.0)[:, None])
    nxt = torch.where(live, nxt, torch.full_like(nxt, st.pad_id))
    st.out.scatter_(1, col, nxt[:, None])
    st.row_step.add_(live.long())
    st.finished.logical_or_((nxt[:, None] == st.eos[None, :]).any(-1))
    st.finished.logical_or_(st.row_step >= st.max_new_row)
    st.tok.copy_(nxt)
