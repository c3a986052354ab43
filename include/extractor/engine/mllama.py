"""Batched greedy generation for Llama 3.2 Vision with a static cache and CUDA graphs.

``transformers``' ``generate`` spends ~100 ms per decode step on an H100 for the 11B
model whatever the batch (~1,600 kernel launches, ~300 dtype casts, a host sync per
step), and its static-cache path fails for Mllama. This engine keeps HF's forward for
the prefill (vision tower, projector, prompt: exactly what ``generate`` runs first),
copies the resulting keys/values into preallocated buffers, computes each image's
cross-attention keys/values once, and runs every later step through ``decode_step``:
one captured CUDA graph replayed per token, positions and lengths as device tensors,
a host sync only every ``eos_check_every`` steps to stop once all rows finished.

The output is what ``model.generate(..., do_sample=False)`` returns after the prompt:
new tokens only, rows that finished early padded with the pad token, as long as the
longest row (see tests/unit/test_engine.py and docs/gpu.md for the checks).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from extractor.engine import fp8_attention
from extractor.engine.memory import GIB, free_device_bytes, pick_batch_size, row_bytes
from extractor.engine.mllama_decode import (
    DecodeOps,
    DecodeState,
    collect_weights,
    decode_step,
    rotary_tables,
    select_next,
    text_model_of,
)
from extractor.engine.prefetch import Prefilled
from extractor.engine.prefill_attention import prefill_attention
from extractor.engine.slots import SlotScheduler

log = logging.getLogger(__name__)

_INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values", "aspect_ratio_ids", "aspect_ratio_mask",
                "cross_attention_mask")


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _shared_valid_prefix(cross_bias, row_mask) -> int:
    """Length of the vision-token prefix every row attends to, when that is all they attend
    to (same valid tiles in every row, none fully masked); 0 when trimming would change
    the result (a fully masked row attends uniformly to all tokens, padding included)."""
    if not bool((row_mask == 1).all()):
        return 0
    valid = cross_bias[:, 0, 0, :] == 0  # [B, S]
    if not bool((valid == valid[:1]).all()):
        return 0
    keep = int(valid[0].sum())
    return keep if keep and bool(valid[0, :keep].all()) else 0


def _kv_quantizers(cross_kv: str, self_kv: str, compiled: bool) -> tuple[Any, Any]:
    """The float8 keys/values' quantizers (the image's per head, the prompt's per token): one fused
    kernel each when ``compiled``, else four passes through float32."""
    for name, value in (("cross_kv", cross_kv), ("self_kv", self_kv)):
        if value not in ("bf16", "fp8"):
            raise ValueError(f"{name} must be 'bf16' or 'fp8', not {value!r}")
    fns = (fp8_attention.quantize, fp8_attention.quantize_tokens)
    if compiled and "fp8" in (cross_kv, self_kv):
        import torch

        fns = tuple(torch.compile(fn, fullgraph=True) for fn in fns)
    return fns


class MllamaStaticEngine(SlotScheduler):
    """Greedy decoding of ``MllamaForConditionalGeneration`` over a static KV cache.

    ``use_cuda_graphs`` and ``fuse_weights`` default to on for CUDA models and off on the
    CPU (where the same decode math runs eagerly, which is what the CPU tests check).
    ``fuse_weights`` re-lays the q|k|v and gate|up weights of the HF modules as views of
    one tensor each (same values, no extra memory, HF's own forward keeps working).
    ``max_batch`` caps rows per decode batch; left as None it is picked from free GPU
    memory. ``prefill_batch`` bounds how many rows go through HF's prefill at once.
    ``compile_ops`` (default on for CUDA) runs RMSNorm, rotary and SiLU-gating through
    ``torch.compile``: fewer, fused kernels per step, ~10 s of compiling for the first
    batch shape; if compiling fails the eager ops are used. ``prefill_sdpa_backends``
    (e.g. ``("CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH")``) sets SDPA's kernel
    priority for HF's prefill only; None keeps PyTorch's choice, i.e. generate's.
    ``trim_cross_tiles``: when every row of a decode batch attends to the same leading
    tiles (bucketing by tile count makes that the rule), the other tiles' keys/values are
    dropped after the prefill: a masked key has weight exp(-inf) = 0, so the result is
    the same, read with fewer bytes and without a mask.
    ``eos_token_id`` / ``pad_token_id`` default to the model's generation config (pass the
    caller's own generation config values so both paths stop and pad alike).
    ``fp8`` (opt-in; Hopper GPUs): each decode GEMM reads float8 e4m3 weights with per-row
    scales (an extra copy of the text weights, ~half their bf16 size) and per-row quantized
    activations (``torch._scaled_mm``); ``fp8="weight-only"`` keeps the activations in bf16
    and runs the Triton kernel of ``engine/fp8_gemm.py`` instead (closer to bf16, and the faster
    of the two at batch 32 on an H100: 1.14x the bf16 engine, against 1.08x); the prefill keeps
    HF's bf16 forward unless ``fp8_prefill`` (opt-in, needs per-row ``fp8``): then the prefill's
    linear layers (vision tower, projector, text; ``"text"``: the text layers only) run
    row-scaled FP8 GEMMs too (``engine/fp8_prefill.py``). Not exact: docs/gpu.md records the
    first-step logits difference against bf16 and the speed of each.
    ``refill`` (default on): when a call has more rows than a decode batch holds, a row that
    finishes is replaced by a waiting one (same tile count) without waiting for the batch's
    slowest row (``engine/slots.py``; the cache is a ring, so rows keep joining for as long as
    there are waiting ones); finished rows are looked for every ``refill_check_every`` steps, and
    rows join once ``refill_min_rows`` slots are free (or the queue is that short): a prefill
    of a few rows at once uses the GPU better than one row at a time.
    ``overlap_prefill`` (default on; with refill): while a batch decodes, the rows next in
    line are prefilled on a second stream by a worker thread (``engine/prefetch.py``), so
    that joining costs only a copy; a compute-bound prefill and a memory-bound decode share
    the card instead of taking turns. ``decode_priority`` (default on, CUDA): the engine's
    work runs on a high-priority stream, so that the decode steps' kernels go first and the
    prefill ahead fills the SMs they leave.
    ``mask_free_prefill`` (default on): the prefill's vision tower attends without its
    dense padding mask, and cross-attention layers drop an all-zero mask
    (``engine/prefill_attention.py``): the same result up to summation order, flash kernels
    instead of masked ones.
    ``own_vision_tower`` (default on, with ``mask_free_prefill``; not with an FP8 vision tower):
    the prefill's vision tower runs ``engine/vision_tower.py``, HF's layers with one q|k|v GEMM,
    the mask-free attention planned from the tiles and written where ``o_proj`` reads it, and
    fewer copies (a prefill mixing tile counts runs it once per count).
    ``fuse_add_norm`` (default on, with ``compile_ops``): each residual add and the RMSNorm
    after it are one compiled kernel (off only to measure it).
    ``cross_kv="fp8"`` (opt-in): the cross-attention keys/values are kept as float8 e4m3 with a
    scale per row and head (half the bytes a decode step reads from them; a quarter of a step's
    bytes at batch 32 in bf16) and read by ``engine/fp8_attention.py``'s kernel. ``self_kv="fp8"``
    (opt-in): the self-attention cache likewise, with a scale per token and head, each step's key
    and value quantized as they are written. Not exact.
    ``score_tokens`` (default on): each step also writes the chosen token's log-probability
    (max logit minus logsumexp, inside the captured graph) for per-field confidence; off
    only to measure what it costs (bench/gpu_throughput.py).
    """

    def __init__(self, model, *, use_cuda_graphs: bool | None = None, fuse_weights: bool | None = None,
                 max_batch: int | None = None, prefill_batch: int = 8, eos_check_every: int = 16,
                 len_multiple: int = 64, compile_ops: bool | None = None,
                 prefill_sdpa_backends: tuple[str, ...] | None = None,
                 eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
                 trim_cross_tiles: bool = True, mask_free_prefill: bool = True,
                 score_tokens: bool = True, fp8: bool | str = False, refill: bool = True,
                 refill_check_every: int = 4, refill_min_rows: int = 4, overlap_prefill: bool = False,
                 decode_priority: bool = False, fuse_add_norm: bool = True, fp8_prefill: bool | str = False,
                 own_vision_tower: bool = True, cross_kv: str = "bf16", self_kv: str = "bf16"):
        import torch

        self.model, param = model.eval(), next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if any(p.device != self.device for p in model.parameters()):
            raise ValueError("MllamaStaticEngine needs the whole model on one device; "
                             "a model spread by device_map decodes with generate")
        on_cuda = self.device.type == "cuda"
        self.use_cuda_graphs = on_cuda if use_cuda_graphs is None else bool(use_cuda_graphs and on_cuda)
        self.fp8 = fp8
        self.weights = collect_weights(model, fuse=on_cuda if fuse_weights is None else fuse_weights, fp8=fp8)
        compile_ops = on_cuda if compile_ops is None else compile_ops
        if compile_ops:
            self.weights.ops = DecodeOps.compiled(fuse_add_norm=fuse_add_norm)
        self._fp8_prefill = self._fp8_prefill_of(model, fp8_prefill, compile_ops) if fp8_prefill else None
        self.cross_kv, self.self_kv = cross_kv, self_kv
        self._quantize_kv, self._quantize_tokens = _kv_quantizers(cross_kv, self_kv, compile_ops and on_cuda)
        self._tower = self._tower_of(model, own_vision_tower and mask_free_prefill and fp8_prefill in (False, "text"),
                                     compile_ops)
        self.prefill_sdpa_backends = prefill_sdpa_backends
        self.trim_cross_tiles = trim_cross_tiles
        self.mask_free_prefill = mask_free_prefill
        self.score_tokens = score_tokens
        self._full_cross_len = 0
        self.text_config = text_model_of(model).config
        self.num_patches = model.model.vision_model.num_patches
        gen = getattr(model, "generation_config", None)
        eos = (_as_list(eos_token_id) or _as_list(getattr(gen, "eos_token_id", None))
               or _as_list(self.text_config.eos_token_id))
        pad = pad_token_id if pad_token_id is not None else getattr(gen, "pad_token_id", None)
        if pad is None:
            pad = self.text_config.pad_token_id if self.text_config.pad_token_id is not None else eos[0]
        self.eos_ids, self.pad_id = eos, int(_as_list(pad)[0])
        self.max_batch = max_batch
        self.prefill_batch = prefill_batch
        self.eos_check_every = max(1, eos_check_every)
        self.refill = refill
        self.refill_check_every = max(1, refill_check_every)
        self.refill_min_rows = max(1, refill_min_rows)
        self.overlap_prefill = overlap_prefill
        self.decode_priority = decode_priority and on_cuda
        self._decode_stream: Any = None
        self.len_multiple = len_multiple if self.use_cuda_graphs else 1
        self._key: tuple | None = None
        self._state: DecodeState | None = None
        self._graph: Any = None
        self._grammar: Any = None
        self._recorded: list | None = None
        self.stats: dict[str, float] = {}
        self._torch = torch

    # ---------------------------------------------------------------- public API
    def generate(self, input_ids, attention_mask, pixel_values, aspect_ratio_ids, aspect_ratio_mask,
                 cross_attention_mask, max_new_tokens: int, min_new_tokens: int = 0,
                 return_logprobs: bool = False, grammar=None, lengths=None):
        """New tokens only, [B, n] with n <= max_new_tokens, greedy, like ``generate``.

        ``return_logprobs``: also the float32 [B, n] log-probability of each chosen token
        under the step's (min-new-tokens processed) distribution, as ``generate`` scores
        it; 0 where a row had already finished. Needs ``score_tokens`` (the default).
        ``grammar``: an object with ``new_batch(rows, max_new)`` returning the per-batch state
        of a constrained decode (``extractor.backends.grammar.ReceiptGrammar``): each step the
        host fills an allowed-token bitmask while the device computes the logits, then the
        masked choice runs (two captured graphs a step instead of one).
        ``lengths`` (benchmarks): each row's exact number of new tokens (its own min = max)."""
        torch = self._torch
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if return_logprobs and not self.score_tokens:
            raise ValueError("return_logprobs needs an engine built with score_tokens=True")
        if grammar is not None and (min_new_tokens or lengths is not None):
            raise ValueError("min_new_tokens cannot be combined with a grammar (a closed JSON allows only EOS)")
        self._grammar = grammar
        inputs = dict(zip(_INPUT_NAMES, (input_ids, attention_mask, pixel_values, aspect_ratio_ids,
                                         aspect_ratio_mask, cross_attention_mask), strict=False))
        inputs = {k: (v.to(self.device) if v is not None else None) for k, v in inputs.items()}
        if inputs["attention_mask"] is None:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        self.stats = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0, "capture_s": 0.0, "batches": 0}
        bsz = inputs["input_ids"].shape[0]
        limits = self._row_limits(bsz, max_new_tokens, min_new_tokens, lengths)
        cap = self._batch_cap(inputs, max_new_tokens)
        rows_out: dict[int, Any] = {}
        with torch.inference_mode(), self._stream():
            for group in self._groups(inputs, cap):
                rows_out.update(self._run_split_on_oom(group, inputs, cap, max_new_tokens, limits))
        self._check_fp8_sums()
        width = max(toks.shape[0] for toks, _ in rows_out.values())
        out = torch.full((bsz, width), self.pad_id, dtype=torch.long)
        logp = torch.zeros((bsz, width), dtype=torch.float32)
        for row, (toks, lps) in rows_out.items():
            out[row, :toks.shape[0]] = toks
            if lps is not None:
                logp[row, :lps.shape[0]] = lps
        return (out, logp) if return_logprobs else out

    def _fp8_prefill_of(self, model, mode: bool | str, compile_quant: bool):
        from extractor.engine.fp8_prefill import Fp8Prefill, fp8_prefill_table, prefill_quantizer

        table = fp8_prefill_table(model, self.weights, vision=mode != "text")
        return Fp8Prefill(table, model=model, quant=prefill_quantizer(self.device, compile_quant))

    @staticmethod
    def _tower_of(model, enabled: bool, compile_ops: bool):
        if not enabled:
            return None
        from extractor.engine.vision_tower import VisionTower

        return VisionTower(model.model.vision_model, compile_ops=compile_ops)

    def _check_fp8_sums(self):
        """The weight-only FP8 kernel feeds activations / 256 to float16 MMAs: one beyond 2^24
        in magnitude would overflow. The kernel flags any inf or nan sum; say so, once a call."""
        if self.fp8 != "weight-only" or self.device.type != "cuda":
            return
        from extractor.engine import fp8_gemm

        if fp8_gemm.nonfinite(self.device):
            self.stats["fp8_nonfinite"] = True
            log.warning("fp8 weight-only: a decode GEMM summed to inf or nan (activations beyond float16's "
                        "range after the kernel's 1/256 shift, or non-finite input); these tokens are suspect")
            fp8_gemm.clear_nonfinite(self.device)

    @contextlib.contextmanager
    def _stream(self):
        """The engine's own high-priority stream (``decode_priority``), ordered after the
        caller's stream on the way in and before it on the way out."""
        if not self.decode_priority:
            yield
            return
        torch = self._torch
        if self._decode_stream is None:
            self._decode_stream = torch.cuda.Stream(device=self.device, priority=-1)
        caller = torch.cuda.current_stream(self.device)
        self._decode_stream.wait_stream(caller)
        try:
            with torch.cuda.stream(self._decode_stream):
                yield
        finally:
            caller.wait_stream(self._decode_stream)

    def _row_limits(self, bsz: int, max_new: int, min_new: int, lengths):
        """(min new tokens, max new tokens) per row, as CPU long tensors."""
        torch = self._torch
        if lengths is None:
            return torch.full((bsz,), min_new, dtype=torch.long), torch.full((bsz,), max_new, dtype=torch.long)
        exact = torch.tensor([min(max(1, int(n)), max_new) for n in lengths], dtype=torch.long)
        if exact.shape[0] != bsz:
            raise ValueError(f"lengths has {exact.shape[0]} entries for {bsz} rows")
        return exact.clone(), exact

    def _groups(self, inputs, cap: int) -> list[list[int]]:
        """Rows in bucket order: one group per tile count when refilling (more rows than one
        decode batch holds; rows of a group share decode slots), else one group per decode
        batch of ``cap`` rows."""
        order = self._bucket_order(inputs)
        if not self.refill or len(order) <= cap:
            return [order[i:i + cap] for i in range(0, len(order), cap)]
        tiles = self._tiles(inputs)
        groups: list[list[int]] = []
        for row in order:
            if groups and tiles[groups[-1][0]] == tiles[row]:
                groups[-1].append(row)
            else:
                groups.append([row])
        return groups

    def record_step_logits(self) -> list:
        """Checks only (eager decoding): from now on every decode step appends its float32
        logits [B, V] to the list returned (the first token's come from the prefill, not here)."""
        self._recorded = []
        if self._state is not None:
            self._state.record_logits = self._recorded
        return self._recorded

    def release(self) -> None:
        """Drop the cached decode buffers and graph (frees the KV cache memory)."""
        self._key, self._state, self._graph = None, None, None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    # ---------------------------------------------------------------- batching
    def _bucket_order(self, inputs) -> list[int]:
        """Rows sorted by (tile count, prompt length): a chunk then shares most of its
        left padding, which is trimmed, and its image shape."""
        lengths = inputs["attention_mask"].sum(-1).tolist()
        tiles = self._tiles(inputs)
        return sorted(range(len(lengths)), key=lambda i: (tiles[i], lengths[i]))

    def _tiles(self, inputs) -> list[int]:
        arm = inputs["aspect_ratio_mask"]
        return arm[:, 0].sum(-1).tolist() if arm is not None else [0] * inputs["input_ids"].shape[0]

    def _cross_len(self, inputs) -> int:
        pix = inputs["pixel_values"]
        return 0 if pix is None else pix.shape[1] * pix.shape[2] * self.num_patches

    def _batch_cap(self, inputs, max_new: int) -> int:
        bsz = inputs["input_ids"].shape[0]
        if self.max_batch is not None:
            return max(1, min(self.max_batch, bsz))
        if self.device.type != "cuda":
            return bsz
        cfg, w = self.text_config, self.weights
        cross_len = self._cross_len(inputs)
        n_cross = len(cfg.cross_attention_layers)
        per_row = row_bytes(num_self_layers=len(w.layers) - n_cross, num_cross_layers=n_cross,
                            num_kv_heads=w.num_kv_heads, head_dim=w.head_dim,
                            max_len=inputs["input_ids"].shape[1] + max_new + self.len_multiple
                            + max(self.eos_check_every, self.refill_check_every),
                            cross_len=cross_len, vocab_size=w.lm_head.shape[0], hidden_size=w.hidden_size,
                            dtype_bytes=w.embed.element_size(),
                            cross_dtype_bytes=1 if self.cross_kv == "fp8" else None,
                            self_dtype_bytes=1 if self.self_kv == "fp8" else None)
        # Prefill of one sub-batch: vision states (+ intermediate layers), projected states and
        # HF's own cache of the cross keys/values, per row; doubled for the allocator's slack.
        vision_dim = self.model.config.vision_config.vision_output_dim
        prefill_row = cross_len * (vision_dim + w.hidden_size) * 2 * 2 + per_row.cross_kv * (
            2 if self.cross_kv == "fp8" else 1)  # HF's cache holds them in bf16
        held = self._state_bytes()
        free = free_device_bytes(self.device) + held
        cap = pick_batch_size(free, per_row.total, reserve_bytes=2 * GIB + self.prefill_batch * prefill_row,
                              max_batch=64)
        return min(cap, bsz)

    def _state_bytes(self) -> int:
        st = self._state
        if st is None:
            return 0
        tensors = st.self_k + st.self_v + [t for t in st.cross_k + st.cross_v if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _run_split_on_oom(self, group: list[int], inputs, cap: int, max_new: int, limits) -> dict[int, Any]:
        torch = self._torch
        try:
            return self._run_group(group, inputs, cap, max_new, limits)
        except torch.cuda.OutOfMemoryError:
            self.release()
            if cap == 1:
                raise
            half = max(1, min(cap, len(group)) // 2)
            self.max_batch = half  # remember: later batches start at the size that fitted
            log.warning("CUDA out of memory at batch %d; retrying with batches of %d", cap, half)
            return self._run_split_on_oom(group, inputs, half, max_new, limits)

    def _prepare_chunk(self, x, max_new: int, span: int):
        """Cut the chunk's shared left padding, work out its cross-attention bias (or none)
        and make the decode buffers for its shape (``span`` cache positions after the
        prompt, ``max_new`` output columns). Returns (prompt length, bias, row mask)."""
        from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

        am = x["attention_mask"]
        lead = int((am.sum(0) > 0).nonzero()[0])  # left padding shared by every row of this chunk
        for name in ("input_ids", "attention_mask", "cross_attention_mask"):
            if x[name] is not None:
                x[name] = x[name][:, lead:]
        bsz, plen = x["input_ids"].shape
        max_len = -(-(plen + span) // self.len_multiple) * self.len_multiple
        cross_len = self._cross_len(x)
        cross_bias = row_mask = None
        if cross_len > 0:
            if x["cross_attention_mask"] is None:
                raise ValueError("pixel_values given without cross_attention_mask")
            # The decode token's cross mask is the prompt's last row (generate repeats it).
            cross_bias, row_mask = _prepare_cross_attention_mask(x["cross_attention_mask"][:, -1:],
                                                                 num_vision_tokens=self.num_patches,
                                                                 dtype=self.dtype)
            if not bool(cross_bias.any()):
                cross_bias = None  # all-zero bias: let SDPA pick its mask-free (flash) kernel
            elif self.trim_cross_tiles:
                keep = _shared_valid_prefix(cross_bias, row_mask)
                if keep:  # drop the padding tiles' keys/values: fewer bytes a step, no mask
                    cross_len, cross_bias = keep, None
        self._full_cross_len = self._cross_len(x)
        self._ensure_state((bsz, max_len, cross_len, cross_bias is not None, max_new, self._grammar is not None))
        return plen, cross_bias, row_mask

    def _prefill(self, x, pos_ids, sl: slice, start, rows=None):
        """HF forward over rows ``sl`` of the prompt; keys/values copied into the static cache
        at positions ``start ..`` of decode slots ``rows`` (default: the same rows)."""
        cache, logits = self._prefill_cache(x, pos_ids, sl)
        self._copy_cache(cache, sl if rows is None else rows, start)
        del cache
        return logits

    def _prefill_cache(self, x, pos_ids, sl: slice):
        """HF forward over rows ``sl``: (its cache, float32 logits of the last prompt token)."""
        torch = self._torch
        fp8 = self._fp8_prefill.active() if self._fp8_prefill is not None else contextlib.nullcontext()
        with self._sdpa_priority(), prefill_attention(self.model, self.mask_free_prefill), fp8:
            out = self._prefill_forward(x, pos_ids, sl)
        cache = getattr(out, "cache", None)  # transformers >= 5.2x names it `cache`
        if cache is None:
            cache = out.past_key_values
        logits = out.logits[:, -1].to(torch.float32)
        del out
        return cache, logits

    def _prefill_rows(self, inputs, rows: list[int]) -> Prefilled:
        """Rows of ``inputs`` (their shared left padding cut) through HF's prefill, kept as
        they are for a later copy into decode slots (refill, ``engine/prefetch.py``)."""
        x = self._subset(inputs, rows)
        lead = int((x["attention_mask"].sum(0) > 0).nonzero()[0])
        for name in ("input_ids", "attention_mask", "cross_attention_mask"):
            if x[name] is not None:
                x[name] = x[name][:, lead:]
        am = x["attention_mask"]
        pos_ids = (am.long().cumsum(-1) - 1).masked_fill(am == 0, 0)
        cache, logits = self._prefill_cache(x, pos_ids, slice(0, len(rows)))
        return Prefilled(list(rows), x, pos_ids, cache, logits)

    def _sdpa_priority(self):
        if not self.prefill_sdpa_backends:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = [getattr(SDPBackend, name) for name in self.prefill_sdpa_backends]
        try:
            return sdpa_kernel(backends, set_priority=True)
        except TypeError:  # torch without priorities: the listed ones, PyTorch's order
            return sdpa_kernel(backends)

    def _prefill_forward(self, x, pos_ids, sl):
        rows = {k: (v[sl] if v is not None else None) for k, v in x.items()}
        states = self._cross_states(rows)
        if states is not None:  # the engine's own tower ran: HF's forward takes its states instead of pixels
            rows["pixel_values"], rows["cross_attention_states"] = None, states
        return self.model(**rows, position_ids=pos_ids[sl], use_cache=True, logits_to_keep=1)

    def _cross_states(self, rows):
        """The projected vision states of ``rows`` through ``engine/vision_tower.py``, as HF's
        ``MllamaModel`` computes them from ``pixel_values``; None where HF's tower runs (the
        tower off, or no image)."""
        if self._tower is None or rows.get("pixel_values") is None or rows.get("aspect_ratio_mask") is None:
            return None
        states = self._tower(rows["pixel_values"], rows["aspect_ratio_ids"], rows["aspect_ratio_mask"])
        inner = self.model.model
        return inner.multi_modal_projector(states).reshape(-1, states.shape[-2], inner.hidden_size)

    def _copy_cache(self, cache, rows, start) -> None:
        """HF's cache of a prefill into decode slots ``rows`` (a slice or an index tensor):
        self-attention keys/values at positions ``start ..`` (an int), or at the positions
        of the tensor ``start`` (a row joining a running batch, wrapped round the ring)."""
        st = self._state
        si = ci = 0
        for idx, lw in enumerate(self.weights.layers):
            layer = cache.layers[idx]
            if lw.cross:
                if st.cross_k[ci] is not None:
                    if layer.keys.shape[2] != self._full_cross_len:
                        raise RuntimeError(f"cross-attention cache holds {layer.keys.shape[2]} vision "
                                           f"tokens, expected {self._full_cross_len}")
                    keep = st.cross_k[ci].shape[2]
                    if st.cross_k_scale is None:
                        st.cross_k[ci][rows] = layer.keys[:, :, :keep]
                        st.cross_v[ci][rows] = layer.values[:, :, :keep]
                    else:  # float8, quantized once here: the decode only reads them
                        self._put_fp8(st.cross_k[ci], st.cross_k_scale[ci], rows, layer.keys[:, :, :keep])
                        self._put_fp8(st.cross_v[ci], st.cross_v_scale[ci], rows, layer.values[:, :, :keep])
                ci += 1
                continue
            if st.self_k_scale is not None:
                self._put_fp8_tokens(st, si, rows, start, layer)
            elif isinstance(start, int):
                end = start + layer.keys.shape[2]
                st.self_k[si][rows, :, start:end] = layer.keys
                st.self_v[si][rows, :, start:end] = layer.values
            else:
                for j, slot in enumerate(rows.tolist()):
                    st.self_k[si][slot].index_copy_(1, start, layer.keys[j])
                    st.self_v[si][slot].index_copy_(1, start, layer.values[j])
            si += 1

    # ---------------------------------------------------------------- buffers and graph
    def _ensure_state(self, key: tuple) -> None:
        if key == self._key:
            return
        self.release()
        torch = self._torch
        bsz, max_len, cross_len, has_bias, max_new, constrained = key
        w, dev, dt = self.weights, self.device, self.dtype
        kv_shape, cross_shape = (bsz, w.num_kv_heads, max_len, w.head_dim), (bsz, w.num_kv_heads, cross_len, w.head_dim)
        self_dt, cross_dt = (torch.float8_e4m3fn if kv == "fp8" else dt for kv in (self.self_kv, self.cross_kv))
        n_cross = sum(lw.cross for lw in w.layers)
        n_self = len(w.layers) - n_cross
        zeros = lambda *s, dtype=dt: torch.zeros(*s, device=dev, dtype=dtype)  # noqa: E731 (never NaN garbage)
        cos, sin = rotary_tables(w, max_len, dt, dev)
        st = DecodeState(
            tok=zeros(bsz, dtype=torch.long), pos=zeros(bsz, dtype=torch.long),
            cur=zeros(1, dtype=torch.long),
            self_valid=zeros(bsz, max_len, dtype=torch.bool),
            self_k=[zeros(*kv_shape, dtype=self_dt) for _ in range(n_self)],
            self_v=[zeros(*kv_shape, dtype=self_dt) for _ in range(n_self)],
            cross_k=[zeros(*cross_shape, dtype=cross_dt) if cross_len else None for _ in range(n_cross)],
            cross_v=[zeros(*cross_shape, dtype=cross_dt) if cross_len else None for _ in range(n_cross)],
            cross_bias=zeros(bsz, 1, 1, cross_len) if has_bias else None,
            row_mask=torch.ones(bsz, 1, 1, device=dev, dtype=dt),
            finished=zeros(bsz, dtype=torch.bool), out=zeros(bsz, max_new + 1, dtype=torch.long),
            logp=zeros(bsz, max_new + 1, dtype=torch.float32) if self.score_tokens else None,
            eos=torch.tensor(self.eos_ids, device=dev, dtype=torch.long),
            min_new=zeros(bsz, dtype=torch.long), row_step=zeros(bsz, dtype=torch.long),
            max_new_row=torch.full((bsz,), max_new, device=dev, dtype=torch.long),
            pad_id=self.pad_id, cos=cos, sin=sin)
        if "fp8" in (self.cross_kv, self.self_kv):
            self._fp8_state(st, n_cross)
        if constrained:
            vocab = w.lm_head.shape[0]
            st.logits = zeros(bsz, vocab, dtype=torch.float32)
            st.allow = torch.full((bsz, (vocab + 31) // 32), -1, device=dev, dtype=torch.int32)
            st.bit_shifts = torch.arange(32, device=dev, dtype=torch.int32)
        st.record_logits = self._recorded
        self._state = st
        if self.use_cuda_graphs and max_new > 1:
            t0 = time.perf_counter()
            try:
                self._graph = self._capture(st)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # same tokens without compiling / the graph, only slower
                self.stats["graph_error"] = f"{type(exc).__name__}: {exc}"[:500]
                self._graph = None
                if self.weights.ops.rms is not DecodeOps.eager().rms:
                    log.warning("compiled decode ops failed (%s); using eager ops", exc)
                    self.weights.ops = DecodeOps.eager()
                    try:
                        self._graph = self._capture(st)
                    except torch.cuda.OutOfMemoryError:
                        raise
                    except Exception as exc2:
                        log.warning("CUDA graph capture failed, decoding eagerly: %s", exc2)
                else:
                    log.warning("CUDA graph capture failed, decoding eagerly: %s", exc)
            self.stats["capture_s"] = self.stats.get("capture_s", 0.0) + time.perf_counter() - t0
        self._key = key

    def _put_fp8(self, dst, dst_scale, rows, x) -> None:
        """Quantize ``x`` into float8 ``dst`` rows ``rows`` (a slice or an index tensor), scales too
        (written as bytes: indexed writes of float8 tensors are not implemented everywhere)."""
        q, scale = self._quantize_kv(x)
        dst.view(self._torch.uint8)[rows] = q.view(self._torch.uint8)
        dst_scale[rows] = scale

    def _put_fp8_tokens(self, st: DecodeState, si: int, rows, start, layer) -> None:
        """A prefill's self-attention keys/values into the float8 cache, quantized per token: at
        positions ``start ..`` (an int) of rows ``rows``, or at the positions of the tensor ``start``
        of each slot in ``rows`` (a row joining a running batch)."""
        u8 = self._torch.uint8
        for x, cache, scales in ((layer.keys, st.self_k[si], st.self_k_scale[si]),
                                 (layer.values, st.self_v[si], st.self_v_scale[si])):
            q, scale = self._quantize_tokens(x)
            if isinstance(start, int):
                cache.view(u8)[rows, :, start:start + x.shape[2]] = q.view(u8)
                scales[rows, :, start:start + x.shape[2]] = scale
            else:
                for j, slot in enumerate(rows.tolist()):
                    cache[slot].view(u8).index_copy_(1, start, q[j].view(u8))
                    scales[slot].index_copy_(1, start, scale[j])

    def _fp8_state(self, st: DecodeState, n_cross: int) -> None:
        """The scales of the float8 keys/values (allocated as float8 in ``_ensure_state``, never
        as bf16 first: a batch sized for float8 must not need the bf16 bytes even briefly), and
        the attention over them."""
        torch = self._torch
        if self.cross_kv == "fp8" and st.cross_k[0] is not None:
            bsz, nkv = st.cross_k[0].shape[:2]
            st.cross_k_scale = [torch.ones(bsz, nkv, device=self.device) for _ in range(n_cross)]
            st.cross_v_scale = [torch.ones(bsz, nkv, device=self.device) for _ in range(n_cross)]
        if self.self_kv == "fp8":
            st.self_k_scale = [torch.zeros(t.shape[:3], device=self.device) for t in st.self_k]
            st.self_v_scale = [torch.zeros(t.shape[:3], device=self.device) for t in st.self_v]
        kernel = fp8_attention.available(self.device)
        st.fp8_attn = fp8_attention.attention if kernel else fp8_attention.reference
        st.fp8_write = fp8_attention.write_token if kernel else fp8_attention.write_token_reference

    def _capture(self, st: DecodeState):
        """Warm up (kernel selection, workspaces) then capture one decode step: one graph, or
        under a grammar two (the forward up to the logits, and the masked choice). The
        warm-up writes into the buffers; every one of them is reset before a batch starts."""
        torch = self._torch

        def choose():
            select_next(st.logits, st)

        parts = [lambda: decode_step(self.weights, st)] + ([choose] if st.logits is not None else [])
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                for part in parts:
                    part()
        torch.cuda.current_stream().wait_stream(side)
        st.cur.zero_()
        st.pos.zero_()
        st.row_step.zero_()
        st.finished.zero_()
        graphs = []
        for part in parts:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=graphs[0].pool() if graphs else None):
                part()
            graphs.append(graph)
        torch.cuda.synchronize()
        return graphs
