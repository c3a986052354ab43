"""The prefill's attention without masks that mask nothing it needs: same result, flash kernels.

**Vision tower.**
HF's vision tower builds one additive mask per image, ``pad_i * pad_j * min`` over its
``tiles x 1,608`` tokens (``_prepare_aspect_ratio_attention_mask``): only a padding token
attending to a padding token is masked (padding = the 7 tokens that round each tile's
1,601 up to a multiple of 8, and every token of an unused tile). A real token attends to
every key. Given a dense mask, SDPA cannot use its flash kernel, and the mask itself is
read by all 40 layers.

``split_padding_attention`` computes the same thing when every image of the batch has the
same padding (the engine groups rows by tile count, so they do), by ``tile_attention``: the
queries attend to every key in one mask-free (flash) call (up to the last real token when
many tiles are unused; the trailing padding then attends to the real keys, which all lie
before it), and the padding queries are recomputed against the real keys in a small masked
call and written in place. A key with an additive ``min`` has weight ``exp(min - max) = 0``, so
dropping it is exact; only the order of summation changes. Images with different padding
in one batch keep HF's masked call.

**Text cross-attention.** HF passes each cross-attention layer an additive mask over the
image tokens. When every image of the batch uses all its tiles, that mask is all zeros
(rows before the image token are zeroed too: HF multiplies their mask by 0 and masks
their MLP output instead), yet SDPA still takes its masked kernel. ``cross_attention``
drops an all-zero mask and calls HF's SDPA attention without it (not causal).

``prefill_attention(model)`` turns both on inside a ``with`` block (the text side only
where the model runs HF's ``sdpa``): the engine's prefill uses it, ``generate`` keeps HF's
attention. The CPU tests compare both ways in float32 (tests/unit/test_prefill_attention.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

NAME = "receipt_split_padding"
TEXT_NAME = "receipt_cross_mask_free"
log = logging.getLogger(__name__)
_registered = False
_warned = False
_switch = threading.Lock()
_users: dict[int, list] = {}  # id(config) -> [threads inside, HF's implementation to restore]


def _padding_of(attention_mask):
    """(batch, tokens) bool: which tokens are padding. The diagonal of HF's mask is
    ``pad_i * pad_i * min``, so it is negative exactly at the padding tokens."""
    return attention_mask[:, 0].diagonal(dim1=-2, dim2=-1) < 0


@dataclass
class TilePlan:
    """One padding pattern shared by every image of the batch: ``pad`` (tokens,) bool, True at
    padding; ``end`` one past the last real token (the unused tiles' trailing padding starts
    there); ``inner`` the padding positions before ``end`` (each used tile's last 7);
    ``all_pad`` every padding position."""

    pad: Any
    end: int
    inner: Any
    all_pad: Any

    @classmethod
    def of_pad(cls, pad) -> TilePlan:
        end = int((~pad).nonzero()[-1]) + 1
        return cls(pad=pad, end=end, inner=pad[:end].nonzero().squeeze(1), all_pad=pad.nonzero().squeeze(1))

    @classmethod
    def of(cls, used_tiles: list[bool], tile_len: int, patches: int, device) -> TilePlan:
        """The plan of images whose tiles ``used_tiles`` hold ``patches`` real tokens of ``tile_len``."""
        import torch

        pad = torch.ones(len(used_tiles), tile_len, dtype=torch.bool)
        for i, used in enumerate(used_tiles):
            if used:
                pad[i, :patches] = False
        return cls.of_pad(pad.flatten().to(device))


def _plan(attention_mask) -> TilePlan | None:
    """The batch's plan (one host sync), or None when images differ in padding (the caller
    then keeps HF's masked attention) or there is no padding at all."""
    pad = _padding_of(attention_mask)
    if not bool(pad.any()) or not bool((pad == pad[:1]).all()):
        return None
    return TilePlan.of_pad(pad[0])


class _PlanCache:
    """The mask is one tensor shared by every layer of a forward: plan once per mask (held
    by a weak reference, so the mask is freed when the tower is done with it). Per thread:
    the engine may prefill on a worker thread while the main thread prefills too."""

    local = threading.local()

    @classmethod
    def get(cls, attention_mask, make=None):
        make = make or _plan
        entries = getattr(cls.local, "entries", None)
        if entries is None:
            entries = cls.local.entries = {}
        entry = entries.get(make)
        if entry is None or entry[0]() is not attention_mask:
            entry = entries[make] = (weakref.ref(attention_mask), make(attention_mask))
        return entry[1]

    @classmethod
    def clear(cls):
        cls.local.entries = None


def _attend(q, k, v, scale, mask=None):
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, is_causal=False)


def tile_attention(q, k, v, plan: TilePlan, scale: float, small_tail: int = 64):
    """Attention over (batch, heads, tokens, head_dim) q/k/v under ``plan``, returned as
    (batch, tokens, heads * head_dim), the layout ``o_proj`` reads. A real query attends to
    every key; a padding query to the real keys only (HF's ``pad_i * pad_j``). When the
    trailing padding is at most ``small_tail`` tokens, every query goes through the mask-free
    call and the padding ones are overwritten in place (nothing concatenated); else the
    trailing padding attends to the real keys, all before ``end``, in a call of its own."""
    import torch

    b, h, n, d = q.shape
    real = (~plan.pad).view(1, 1, 1, n)
    if n - plan.end <= small_tail:
        out = _attend(q, k, v, scale).transpose(1, 2)
        fix = plan.all_pad
    else:
        end = plan.end
        out = torch.cat([_attend(q[:, :, :end], k, v, scale).transpose(1, 2),
                         _attend(q[:, :, end:], k[:, :, :end], v[:, :, :end], scale, real[..., :end]).transpose(1, 2)],
                        dim=1)
        fix = plan.inner
    if fix.numel():
        out.index_copy_(1, fix, _attend(q.index_select(2, fix), k, v, scale, real).transpose(1, 2))
    return out.reshape(b, n, h * d)


def split_padding_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """An HF attention function (``AttentionInterface``): query/key/value (batch, heads,
    tokens, head_dim), HF's additive vision mask or None; returns (batch, tokens, heads,
    head_dim) and no weights, as ``sdpa_attention_forward`` does."""
    if attention_mask is None:
        out = _attend(query, key, value, scaling)
    else:
        plan = _PlanCache.get(attention_mask)
        if plan is None:  # padding differs between images (or there is none): HF's way
            out = _attend(query, key, value, scaling, attention_mask)
        else:
            b, h, n, d = query.shape
            return tile_attention(query, key, value, plan, scaling).view(b, n, h, d), None
    return out.transpose(1, 2).contiguous(), None


def _all_zero(attention_mask) -> bool:
    return not bool(attention_mask.any())


def cross_attention(module, query, key, value, attention_mask, **kwargs):
    """HF's SDPA attention for the text layers; a cross-attention layer's all-zero mask is
    dropped (then nothing is masked, so it is the same attention) and the call made non-causal."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (attention_mask is not None and type(module).__name__ == "MllamaTextCrossAttention"
            and _PlanCache.get(attention_mask, _all_zero)):
        kwargs["is_causal"] = False
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    global _registered
    with _switch:
        if not _registered:
            from transformers import AttentionInterface
            from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

            AttentionInterface.register(NAME, split_padding_attention)
            AttentionInterface.register(TEXT_NAME, cross_attention)
            # HF builds masks only for names it knows a mask function for: the text layers' own
            # (causal, padding) masks must be SDPA's, as without the switch.
            AttentionMaskInterface.register(TEXT_NAME, sdpa_mask)
            _registered = True


@contextlib.contextmanager
def prefill_attention(model, enabled: bool = True):
    """Inside the block, ``model``'s vision tower attends with ``split_padding_attention``
    and, where it runs HF's ``sdpa``, its text model with ``cross_attention`` (counted, so
    that overlapping blocks in two threads restore HF's settings once, last)."""
    switches = _switches(model) if enabled else []
    for config, name in switches:
        _switch_on(config, name)
    try:
        yield
    finally:
        _PlanCache.clear()
        for config, _ in switches:
            _switch_off(config)


def _switches(model) -> list:
    """(config, attention name) pairs to switch; none, with one warning, where this
    transformers lays the model out otherwise (the prefill then keeps HF's attention)."""
    global _warned
    try:
        _register()
        vision = model.model.vision_model.config
        text = model.model.language_model.config
        use_text = text._attn_implementation_internal == "sdpa"
        vision._attn_implementation_internal  # noqa: B018 - the attribute the switch sets
    except (AttributeError, ImportError) as exc:
        if not _warned:
            log.warning("mask-free prefill attention unavailable (%s: %s); the prefill keeps HF's attention",
                        type(exc).__name__, exc)
            _warned = True
        return []
    return [(vision, NAME)] + ([(text, TEXT_NAME)] if use_text else [])


def _switch_on(config, name: str) -> None:
    with _switch:
        users = _users.setdefault(id(config), [0, config._attn_implementation_internal])
        users[0] += 1
        config._attn_implementation_internal = name


def _switch_off(config) -> None:
    with _switch:
        users = _users[id(config)]
        users[0] -= 1
        if users[0] == 0:
            config._attn_implementation_internal = users[1]
            del _users[id(config)]
