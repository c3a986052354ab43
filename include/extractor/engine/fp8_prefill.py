"""FP8 GEMMs in the engine's prefill (opt-in, with an FP8 engine; Hopper GPUs).

The decode step is bound by reading weights, so FP8 there halves the bytes
(``Fp8Weight``); the prefill is bound by arithmetic instead (docs/gpu.md: ~27 TFLOP a
receipt, half of it GEMMs), and Hopper's FP8 tensor cores do twice bf16's FLOPs. With
``fp8_prefill`` every ``nn.Linear`` the prefill runs (vision tower, projector, the text
layers, the cross layers' key/value projections of the image tokens) becomes a row-scaled
FP8 GEMM: activations quantized per row at run time (``quantize_rows``), weights per
output row, float32 accumulation (``torch._scaled_mm``), the bias added after.

Memory: the text layers' FP8 weights are the decode's own copies (a row slice of a fused
q|k|v or gate|up copy is the module's own rows, same bytes, same per-row scales); only the
vision tower, the projector and the cross layers' k/v projections get new copies (~1 GB
for the 11B model: +1.1 GiB peak at batch 32). ``lm_head`` stays bf16 (the prefill computes
one row of logits per receipt). Not exact: bench/gpu_throughput.py ``fp8`` records the
first-step logits difference against bf16 and the speed.

Measured (docs/gpu.md, "FP8 in the prefill too"): with the Triton quantizer below, the text
layers' FP8 GEMMs take ~4 ms off a receipt's prefill on an H100 (1.17x the bf16 engine with
the weight-only decode, against 1.14x without); the vision tower's (K = 1,280) gain nothing
net. Off by default and in the preset: on random weights no FP8 scheme's accuracy can be
judged, and it has not been checked on the real checkpoint.

q, k and v (and gate and up) read the same input: its quantization is done once and reused
while the same tensor comes back (``_Quantizer``).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

from extractor.engine.mllama_decode import Fp8Weight, TextWeights, quantize_rows, text_model_of


class _Quantizer:
    """``quantize_rows`` of the last input, reused when the next call is a sibling module
    (same parent: q, k, v of one attention, gate and up of one MLP) given the same tensor.
    Inference tensors have no version counter, so reuse stays within one parent's forward,
    where HF does not modify an input between its projections."""

    def __init__(self, quant):
        self.quant = quant or quantize_rows
        self._last: tuple[int, Any, Any] | None = None

    def __call__(self, x, group: int = -1):
        last = self._last
        if last is not None and last[0] == group and last[1]() is x:
            return last[2]
        out = self.quant(x.reshape(-1, x.shape[-1]))
        self._last = (group, weakref.ref(x), out)
        return out

    def clear(self) -> None:
        self._last = None


def fp8_linear(x, weight: Fp8Weight, bias, quant):
    """``F.linear(x, W, bias)`` as a row-scaled FP8 GEMM (output in ``x``'s dtype);
    ``quant(x)`` gives the activations' float8 rows and their scales."""
    import torch

    xq, xs = quant(x)
    out = torch._scaled_mm(xq, weight.q.t(), scale_a=xs, scale_b=weight.scale, out_dtype=x.dtype)
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


_QUANT_KERNEL: Any = None


def _quant_jit():
    import triton
    import triton.language as tl

    @triton.jit
    def quant_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_x, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        mask = offs < K
        x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
        scale = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-12) / 448.0
        q = tl.math.div_rn(x, scale).to(tl.float8e4nv)
        tl.store(q_ptr + row * K + offs, q, mask=mask)
        tl.store(s_ptr + row, scale)

    return quant_rows_kernel


def quantize_rows_triton(x2d):
    """``quantize_rows`` in one pass: a program per row reads it once (K <= 16,384), takes
    its absolute maximum and writes the float8 row and its scale; the same values as
    ``quantize_rows`` (round-to-nearest division and cast). ``torch.compile``'s version
    read each row twice through float32 and ran at ~1 TB/s on an H200: as long as the
    FP8 GEMM it feeds (bench/fp8_prefill_gemms.py)."""
    import torch
    import triton

    global _QUANT_KERNEL
    if _QUANT_KERNEL is None:
        _QUANT_KERNEL = _quant_jit()
    m, k = x2d.shape
    if x2d.stride(1) != 1:
        x2d = x2d.contiguous()
    q = torch.empty((m, k), device=x2d.device, dtype=torch.float8_e4m3fn)
    scale = torch.empty((m, 1), device=x2d.device, dtype=torch.float32)
    block = triton.next_power_of_2(k)
    _QUANT_KERNEL[(m,)](x2d, q, scale, k, x2d.stride(0), BLOCK=block, num_warps=max(1, min(16, block // 256)))
    return q, scale


def prefill_quantizer(device, compile_ops: bool):
    """The prefill's activation quantizer: the Triton kernel on CUDA (where Triton is there and
    rows fit one program), else ``quantize_rows`` (compiled with ``compile_ops``)."""
    from extractor.engine import fp8_gemm

    if device.type == "cuda" and fp8_gemm.available():
        def quant(x2d):
            return quantize_rows_triton(x2d) if x2d.shape[1] <= 16384 else quantize_rows(x2d)
        return quant
    if compile_ops:
        import torch

        return torch.compile(quantize_rows, dynamic=True, fullgraph=True)
    return quantize_rows


def _rows(weight: Fp8Weight, start: int, stop: int) -> Fp8Weight:
    return Fp8Weight(q=weight.q[start:stop], scale=weight.scale[:, start:stop].contiguous(), kernel="scaled_mm")


def _split(weight, linears) -> list[tuple[Any, Fp8Weight]]:
    """A fused FP8 copy handed back to the modules its rows came from."""
    out, start = [], 0
    for lin in linears:
        rows = lin.weight.shape[0]
        out.append((lin, _rows(weight, start, start + rows)))
        start += rows
    return out


def _own(weight) -> Fp8Weight | None:
    return weight if isinstance(weight, Fp8Weight) else None


def _text_pairs(layer, lw) -> list[tuple[Any, Fp8Weight | None]]:
    attn = layer.cross_attn if lw.cross else layer.self_attn
    mlp = layer.mlp
    if lw.cross:  # k/v of the image tokens run only here: no decode copy to share
        pairs = [(attn.q_proj, _own(lw.wq)), (attn.k_proj, None), (attn.v_proj, None)]
    elif _own(lw.wqkv) is not None:
        pairs = _split(lw.wqkv, [attn.q_proj, attn.k_proj, attn.v_proj])
    else:
        pairs = [(attn.q_proj, _own(lw.wq)), (attn.k_proj, _own(lw.wk)), (attn.v_proj, _own(lw.wv))]
    if _own(lw.wgu) is not None:
        pairs += _split(lw.wgu, [mlp.gate_proj, mlp.up_proj])
    else:
        pairs += [(mlp.gate_proj, _own(lw.wg)), (mlp.up_proj, _own(lw.wu))]
    return pairs + [(attn.o_proj, _own(lw.wo)), (mlp.down_proj, _own(lw.wd))]


def fp8_prefill_table(model, weights: TextWeights, vision: bool = True) -> list[tuple[Any, Fp8Weight]]:
    """Every linear layer of the prefill with its FP8 weight (the decode's where it has one);
    ``vision`` False: the text layers only (the vision tower and projector stay bf16)."""
    import torch

    if not isinstance(weights.lm_head, Fp8Weight) or weights.lm_head.scale.dim() != 2:
        raise ValueError("fp8_prefill needs an engine with per-row FP8 decode weights (fp8='rowwise' or "
                         "'weight-only')")
    pairs: list[tuple[Any, Fp8Weight | None]] = []
    for layer, lw in zip(text_model_of(model).layers, weights.layers, strict=True):
        pairs += _text_pairs(layer, lw)
    inner = model.model
    for part in (inner.vision_model, inner.multi_modal_projector) if vision else ():
        pairs += [(m, None) for m in part.modules() if isinstance(m, torch.nn.Linear)]
    return [(lin, w if w is not None else Fp8Weight.of(lin.weight)) for lin, w in pairs]


def _parents(model) -> dict[int, int]:
    """id(module) -> id(its parent), for the quantizer's sibling rule."""
    return {id(child): id(parent) for parent in model.modules() for child in parent.children()}


class Fp8Prefill:
    """Switches the listed modules to their FP8 GEMM (a per-instance ``forward``) inside
    ``active()``; HF's forward comes back when the last thread inside leaves (the prefill
    ahead runs on a worker thread while the main thread may prefill too). Each thread
    keeps its own quantizer."""

    def __init__(self, table: list[tuple[Any, Fp8Weight]], quant=None, model=None):
        self.table = table
        self.quant = quant
        self._group = _parents(model) if model is not None else {}
        self._lock = threading.Lock()
        self._inside = 0
        self._local = threading.local()

    def _quantizer(self) -> _Quantizer:
        q = getattr(self._local, "q", None)
        if q is None:
            q = self._local.q = _Quantizer(self.quant)
        return q

    def _forward_of(self, lin, weight):
        group = self._group.get(id(lin), id(lin))
        return lambda x: fp8_linear(x, weight, lin.bias, lambda t: self._quantizer()(t, group))

    @contextlib.contextmanager
    def active(self):
        with self._lock:
            if self._inside == 0:
                for lin, weight in self.table:
                    lin.forward = self._forward_of(lin, weight)
            self._inside += 1
        try:
            yield
        finally:
            self._quantizer().clear()
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    for lin, _ in self.table:
                        del lin.forward
