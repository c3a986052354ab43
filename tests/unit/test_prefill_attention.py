"""The engine's mask-free prefill attention against HF's masked one, on the tiny Mllama (CPU, float32)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from extractor.engine import prefill_attention as pa  # noqa: E402
from extractor.engine.prefill_attention import NAME, prefill_attention, split_padding_attention  # noqa: E402
from tests.unit.test_engine import _batch, tiny_mllama  # noqa: E402,F401 - the fixture


def _tower(model, batch):
    vision = model.model.vision_model
    with torch.inference_mode():
        return vision(pixel_values=batch["pixel_values"], aspect_ratio_ids=batch["aspect_ratio_ids"],
                      aspect_ratio_mask=batch["aspect_ratio_mask"]).last_hidden_state


@pytest.mark.parametrize("tiles", [[2, 2, 2], [1, 2, 1, 2], [1, 1]])
def test_split_attention_equals_hf_masked_attention(tiny_mllama, tiles):  # noqa: F811 - the fixture
    # 5 tokens per tile padded to 8: padding tokens in every tile, and whole unused tiles
    # for the 1-tile rows; mixed tile counts give two padding patterns in one batch.
    batch = _batch([6] * len(tiles), tiles, seed=len(tiles))
    config = tiny_mllama.model.vision_model.config
    before = config._attn_implementation
    reference = _tower(tiny_mllama, batch)
    with prefill_attention(tiny_mllama):
        assert config._attn_implementation == NAME
        split = _tower(tiny_mllama, batch)
    assert config._attn_implementation == before
    torch.testing.assert_close(split, reference, rtol=1e-5, atol=1e-5)
    assert not torch.equal(_tower(tiny_mllama, _batch([6] * len(tiles), tiles, seed=99)), reference)


def _pad_rows(*ranges):
    pad = torch.zeros(len(ranges), 16, dtype=torch.bool)
    for row, spans in enumerate(ranges):
        for a, b in spans:
            pad[row, a:b] = True
    return pad


@pytest.mark.parametrize("pad", [
    _pad_rows([(5, 8), (13, 16)], [(5, 8), (13, 16)]),  # every tile used: inner padding only
    _pad_rows([(5, 16)], [(5, 16)], [(5, 16)]),  # unused tiles: a trailing run of padding
    _pad_rows([(5, 8), (13, 16)], [(5, 16)]),  # patterns differ: HF's masked call
])
def test_split_attention_drops_only_padding_to_padding_pairs(pad):
    # Direct check of the function on random tensors against SDPA with HF's mask rule.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(pad.shape[0], 2, 16, 8, generator=g) for _ in range(3))
    p = pad.to(torch.float32).unsqueeze(-1)
    mask = (p @ p.transpose(-1, -2) * torch.finfo(torch.float32).min).unsqueeze(1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    out, weights = split_padding_attention(None, q, k, v, mask, scaling=8 ** -0.5)
    assert weights is None
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    unmasked, _ = split_padding_attention(None, q, k, v, None, scaling=8 ** -0.5)
    torch.testing.assert_close(unmasked, torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2))


@pytest.mark.parametrize("tiles", [[2, 2, 2], [1, 2]])
def test_prefill_forward_equals_hf_and_drops_all_zero_cross_masks(tiny_mllama, tiles, monkeypatch):  # noqa: F811
    # [2, 2, 2]: every image uses both tiles, so the cross-attention mask is all zeros and is
    # dropped; [1, 2]: a padding tile is masked for one row, so HF's masked call stays.
    batch = _batch([9, 7, 8][:len(tiles)], tiles, seed=5)
    text = tiny_mllama.model.language_model.config
    assert text._attn_implementation == "sdpa"
    with torch.inference_mode():
        reference = tiny_mllama(**batch, use_cache=True).logits
        dropped = []
        real = pa._all_zero
        monkeypatch.setattr(pa, "_all_zero", lambda m: dropped.append(real(m)) or dropped[-1])
        with prefill_attention(tiny_mllama):
            assert text._attn_implementation == pa.TEXT_NAME
            got = tiny_mllama(**batch, use_cache=True).logits
    assert text._attn_implementation == "sdpa"
    assert dropped == [len(set(tiles)) == 1]  # planned once per forward, for every cross layer
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


def test_a_model_laid_out_otherwise_keeps_hf_attention(caplog, monkeypatch):
    # e.g. a transformers release that moves the vision tower: one warning, no switch, no error.
    class Other(torch.nn.Module):
        pass

    monkeypatch.setattr(pa, "_warned", False)
    with caplog.at_level("WARNING"), prefill_attention(Other()):
        pass
    assert "prefill keeps HF's attention" in caplog.text
