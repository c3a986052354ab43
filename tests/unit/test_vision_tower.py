"""The engine's vision tower (engine/vision_tower.py) against HF's, on the tiny Mllama (CPU, float32)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from extractor.engine.vision_tower import TilePlan, VisionTower, tile_attention  # noqa: E402
from tests.unit.test_engine import _batch, tiny_mllama  # noqa: E402,F401 - the fixture


def _hf_tower(model, batch):
    with torch.inference_mode():
        return model.model.vision_model(pixel_values=batch["pixel_values"], aspect_ratio_ids=batch["aspect_ratio_ids"],
                                        aspect_ratio_mask=batch["aspect_ratio_mask"]).last_hidden_state


def _tower(tower, batch):
    with torch.inference_mode():
        return tower(batch["pixel_values"], batch["aspect_ratio_ids"], batch["aspect_ratio_mask"])


@pytest.mark.parametrize("small_tail", [0, 64])  # the concatenating branch and the in-place one
@pytest.mark.parametrize("tiles", [[2, 2, 2], [1, 1]])
def test_tower_equals_hf_tower(tiny_mllama, tiles, small_tail):  # noqa: F811 - the fixture
    # 5 tokens per tile padded to 8: [2, 2, 2] has inner padding only, [1, 1] a whole unused
    # tile after it (trailing padding), which each branch handles its own way.
    batch = _batch([6] * len(tiles), tiles, seed=len(tiles))
    reference = _hf_tower(tiny_mllama, batch)
    tower = VisionTower(tiny_mllama.model.vision_model, small_tail=small_tail)
    got = _tower(tower, batch)
    assert got.shape == reference.shape
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    # the fused q|k|v weight is a view of the modules' own: HF's tower computes as before
    torch.testing.assert_close(_hf_tower(tiny_mllama, batch), reference, rtol=0, atol=0)
    assert not torch.equal(_tower(tower, _batch([6] * len(tiles), tiles, seed=99)), got)


def test_tower_runs_mixed_tile_counts_per_count(tiny_mllama):  # noqa: F811
    batch = _batch([6, 6, 6], [1, 2, 1], seed=3)
    tower = VisionTower(tiny_mllama.model.vision_model)
    torch.testing.assert_close(_tower(tower, batch), _hf_tower(tiny_mllama, batch), rtol=1e-5, atol=1e-5)
    assert sorted(key[0] for key in tower._plans) == [(True, False), (True, True)]


def test_tile_attention_masks_only_padding_to_padding(tiny_mllama):  # noqa: F811
    # Direct check on random tensors: 3 tiles of 8 tokens, 5 real each, the last tile unused.
    plan = TilePlan.of([True, True, False], 8, 5, "cpu")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 24, 4, generator=g) for _ in range(3))
    p = plan.pad.to(torch.float32).view(1, 24, 1)
    mask = (p @ p.transpose(-1, -2) * torch.finfo(torch.float32).min).unsqueeze(1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(2, 24, 8)
    for small_tail in (0, 8):
        torch.testing.assert_close(tile_attention(q, k, v, plan, 0.5, small_tail), ref, rtol=1e-5, atol=1e-6)


def test_engine_prefill_runs_its_own_tower_with_generate_tokens(tiny_mllama, monkeypatch):  # noqa: F811
    from extractor.engine import MllamaStaticEngine
    from tests.unit.test_engine import _reference

    batch = _batch(lengths=[12, 9, 5, 7], tiles=[2, 1, 2, 1])  # one prefill mixing tile counts
    ref = _reference(tiny_mllama, batch, max_new=10)
    calls = []
    real = VisionTower.__call__
    monkeypatch.setattr(VisionTower, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    off = MllamaStaticEngine(tiny_mllama, compile_ops=False, own_vision_tower=False)
    assert torch.equal(off.generate(**batch, max_new_tokens=10), ref) and not calls
    hf = type(tiny_mllama.model.vision_model)
    monkeypatch.setattr(hf, "forward", lambda *a, **k: pytest.fail("HF's tower ran"))
    assert torch.equal(MllamaStaticEngine(tiny_mllama, compile_ops=False).generate(**batch, max_new_tokens=10), ref)
    assert calls
