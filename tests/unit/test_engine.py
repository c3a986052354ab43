"""The static-cache Mllama engine against transformers' own ``generate``, on a tiny model.

Runs on the CPU: the engine's decode math (static cache, folded grouped-query attention,
rotary tables, cross-attention gates and masks, min-new-tokens, EOS padding, bucketing
and chunking) runs eagerly there; only the CUDA-graph capture needs a GPU and is
exercised by bench/gpu_throughput.py on the device machine (numbers in docs/gpu.md).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from extractor.engine import MllamaStaticEngine, pick_batch_size, row_bytes, supports  # noqa: E402
from extractor.engine.memory import GIB  # noqa: E402
from extractor.engine.mllama_decode import add_rms_norm  # noqa: E402
from extractor.testing.tiny_models import open_cross_attention_gates  # noqa: E402

IMAGE_TOKEN = 250
PAD = 3


@pytest.fixture(scope="module")
def tiny_mllama():
    return build_tiny_mllama()


def build_tiny_mllama():
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    torch.manual_seed(0)
    vision = dict(hidden_size=32, attention_heads=2, num_hidden_layers=2, num_global_layers=1,
                  intermediate_size=64, intermediate_layers_indices=[0], vision_output_dim=64,
                  image_size=28, patch_size=14, max_num_tiles=2,
                  supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])
    # Three text layers, the middle one cross-attention; 4 query heads on 2 kv heads (GQA).
    text = dict(vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=96, cross_attention_layers=[1, 3],
                max_position_embeddings=512, initializer_range=0.08, bos_token_id=1, eos_token_id=2,
                pad_token_id=PAD,
                rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                              "original_max_position_embeddings": 64, "rope_type": "llama3"})
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN)
    model = MllamaForConditionalGeneration(config).eval()
    open_cross_attention_gates(model, attn=0.9, mlp=-0.7)  # fresh gates are 0: the image would not matter
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = PAD
    return model


def _batch(lengths, tiles, seed=0):
    """A left-padded batch as the processor builds it: <bos> <|image|> text..., the cross
    mask on from the image token on, over each row's valid tiles only."""
    g = torch.Generator().manual_seed(seed)
    bsz, plen = len(lengths), max(lengths)
    ids = torch.full((bsz, plen), PAD, dtype=torch.long)
    am = torch.zeros(bsz, plen, dtype=torch.long)
    xmask = torch.zeros(bsz, plen, 1, 2, dtype=torch.long)
    arm = torch.zeros(bsz, 1, 2, dtype=torch.long)
    ar_ids = torch.zeros(bsz, 1, dtype=torch.long)
    for b, (n, t) in enumerate(zip(lengths, tiles, strict=False)):
        start = plen - n
        ids[b, start:] = torch.randint(4, 240, (n,), generator=g)
        ids[b, start], ids[b, start + 1] = 1, IMAGE_TOKEN
        am[b, start:] = 1
        xmask[b, start + 1:, 0, :t] = 1
        arm[b, 0, :t] = 1
        ar_ids[b, 0] = 1 if t == 1 else 2
    pix = torch.randn(bsz, 1, 2, 3, 28, 28, generator=g)
    return dict(input_ids=ids, attention_mask=am, pixel_values=pix, aspect_ratio_ids=ar_ids,
                aspect_ratio_mask=arm, cross_attention_mask=xmask)


def _reference(model, batch, max_new, min_new=0):
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new, min_new_tokens=min_new, do_sample=False)
    return out[:, batch["input_ids"].shape[1]:]


def _first_step(model, batch, max_new, **kwargs):
    """(engine, tokens, the first decoded step's logits) of an engine built with ``kwargs``."""
    engine = MllamaStaticEngine(model, **kwargs)
    recorded = engine.record_step_logits()
    tokens = engine.generate(**batch, max_new_tokens=max_new)
    return engine, tokens, recorded[0]


def _engine(model, batch, max_new, min_new=0, **kwargs):
    return MllamaStaticEngine(model, **kwargs).generate(**batch, max_new_tokens=max_new,
                                                        min_new_tokens=min_new)


def test_tokens_equal_generate_on_left_padded_batch(tiny_mllama):
    batch = _batch(lengths=[12, 9, 5], tiles=[2, 1, 2])
    ref = _reference(tiny_mllama, batch, max_new=14)
    got = _engine(tiny_mllama, batch, max_new=14)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)
    # The tokens depend on the image (the cross-attention path is live, not skipped).
    other = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    assert not torch.equal(_engine(tiny_mllama, other, max_new=14), got)


def test_eos_padding_and_min_new_tokens_match_generate(tiny_mllama):
    batch = _batch(lengths=[10, 7, 8, 6], tiles=[1, 2, 2, 1], seed=1)
    free_run = _reference(tiny_mllama, batch, max_new=12)
    # Make a token that row 0 emits at step 3 the EOS: rows stop at different steps.
    eos = int(free_run[0, 3])
    old = tiny_mllama.generation_config.eos_token_id
    tiny_mllama.generation_config.eos_token_id = [eos, 2]
    try:
        for min_new in (0, 5):
            ref = _reference(tiny_mllama, batch, max_new=12, min_new=min_new)
            got = _engine(tiny_mllama, batch, max_new=12, min_new=min_new, eos_check_every=2)
            assert torch.equal(got, ref), (min_new, got, ref)
        assert (ref == PAD).any()  # padding after EOS really happened in this case
    finally:
        tiny_mllama.generation_config.eos_token_id = old


def test_chunked_batches_and_fused_weights_match(tiny_mllama):
    batch = _batch(lengths=[11, 4, 9, 6, 8], tiles=[2, 1, 1, 2, 2], seed=2)
    ref = _reference(tiny_mllama, batch, max_new=9)
    # Two rows per decode batch (bucketed by tiles and length, left padding trimmed),
    # one row per prefill call, and q|k|v / gate|up fused into single GEMMs.
    got = _engine(tiny_mllama, batch, max_new=9, max_batch=2, prefill_batch=1, fuse_weights=True)
    assert torch.equal(got, ref)
    # HF's forward still sees the same weights through the fused views.
    assert torch.equal(_reference(tiny_mllama, batch, max_new=9), ref)


def test_padding_tiles_are_dropped_when_every_row_shares_them(tiny_mllama):
    batch = _batch(lengths=[8, 11, 6], tiles=[1, 1, 1], seed=5)  # one valid tile of two
    ref = _reference(tiny_mllama, batch, max_new=10)
    patches = tiny_mllama.model.vision_model.num_patches
    trimmed = MllamaStaticEngine(tiny_mllama)
    assert torch.equal(trimmed.generate(**batch, max_new_tokens=10), ref)
    assert trimmed._state.cross_k[0].shape[2] == patches and trimmed._state.cross_bias is None
    full = MllamaStaticEngine(tiny_mllama, trim_cross_tiles=False)
    assert torch.equal(full.generate(**batch, max_new_tokens=10), ref)
    assert full._state.cross_k[0].shape[2] == 2 * patches and full._state.cross_bias is not None


def test_engine_step_logits_match_generate_scores(tiny_mllama):
    batch = _batch(lengths=[6, 9], tiles=[1, 2], seed=3)  # already in the engine's bucket order
    with torch.inference_mode():
        ref = tiny_mllama.generate(**batch, max_new_tokens=6, do_sample=False, output_logits=True,
                                   return_dict_in_generate=True)
    engine = MllamaStaticEngine(tiny_mllama)
    recorded = engine.record_step_logits()
    engine.generate(**batch, max_new_tokens=6)
    assert len(recorded) == 5  # decode steps after the prefill's token
    for step, logits in enumerate(recorded, start=1):
        want = ref.logits[step].float()
        rel = (logits - want).norm() / want.norm()
        assert rel < 1e-5, (step, float(rel))


def _reference_logprobs(model, batch, max_new, min_new=0):
    """generate's tokens and, per step, the log-softmax of its processed scores (after the
    min-new-tokens rule) at the chosen token: what per-field confidence is built from."""
    with torch.inference_mode():
        ref = model.generate(**batch, max_new_tokens=max_new, min_new_tokens=min_new, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    tokens = ref.sequences[:, batch["input_ids"].shape[1]:]
    logp = torch.stack([torch.log_softmax(s.float(), -1).gather(1, tokens[:, i:i + 1])[:, 0]
                        for i, s in enumerate(ref.scores)], dim=1)
    return tokens, logp


def test_chosen_token_logprobs_match_generate_scores(tiny_mllama):
    """The engine scores each chosen token inside the step (max logit - logsumexp); it must
    equal generate's log-softmax of the processed scores, EOS blocking and early stops
    included, and be 0 once a row has finished."""
    batch = _batch(lengths=[10, 7, 8, 6], tiles=[1, 2, 2, 1], seed=1)
    free_run = _reference(tiny_mllama, batch, max_new=12)
    old = tiny_mllama.generation_config.eos_token_id
    tiny_mllama.generation_config.eos_token_id = [int(free_run[0, 3]), 2]  # rows stop at different steps
    try:
        for min_new in (0, 5):
            want_tokens, want = _reference_logprobs(tiny_mllama, batch, max_new=12, min_new=min_new)
            engine = MllamaStaticEngine(tiny_mllama, eos_check_every=2)
            tokens, got = engine.generate(**batch, max_new_tokens=12, min_new_tokens=min_new, return_logprobs=True)
            assert torch.equal(tokens, want_tokens)
            eos = torch.isin(tokens, torch.tensor([int(free_run[0, 3]), 2]))
            live = (eos.cumsum(1) - eos.long()) == 0  # up to and including each row's EOS
            assert not bool(live.all()) and bool((got[~live] == 0).all())
            assert torch.allclose(got[live], want[live], atol=1e-5), (got, want)
            assert bool((got[live] < 0).all()) and float(got[live].min()) > -20
    finally:
        tiny_mllama.generation_config.eos_token_id = old


def test_scoring_off_gives_the_same_tokens_and_no_logprobs(tiny_mllama):
    batch = _batch(lengths=[8, 5], tiles=[2, 1], seed=6)
    engine = MllamaStaticEngine(tiny_mllama, score_tokens=False)
    assert torch.equal(engine.generate(**batch, max_new_tokens=7), _reference(tiny_mllama, batch, max_new=7))
    assert engine._state.logp is None
    with pytest.raises(ValueError, match="score_tokens"):
        engine.generate(**batch, max_new_tokens=7, return_logprobs=True)


def test_oom_splits_the_batch_and_loses_nothing(tiny_mllama, monkeypatch):
    """No GPU here: the CUDA out-of-memory error is injected for batches above two rows."""
    batch = _batch(lengths=[7, 5, 9, 6, 8], tiles=[1, 2, 2, 1, 2], seed=4)
    ref = _reference(tiny_mllama, batch, max_new=6)
    engine = MllamaStaticEngine(tiny_mllama, refill=False)
    real = engine._run_batch
    tried, done = [], []

    def flaky(first, *args):
        tried.append(len(first))
        if len(first) > 2:
            raise torch.cuda.OutOfMemoryError("injected")
        done.append(len(first))
        return real(first, *args)

    monkeypatch.setattr(engine, "_run_batch", flaky)
    got = engine.generate(**batch, max_new_tokens=6)
    assert torch.equal(got, ref)
    assert tried[0] == 5 and sum(done) == 5 and max(done) <= 2  # 5 -> 2 + 2 + 1
    assert engine.max_batch <= 2


def test_supports_only_plain_mllama_on_one_device(tiny_mllama, monkeypatch):
    assert supports(tiny_mllama)
    assert not supports(torch.nn.Linear(2, 2))
    # A device_map over two GPUs (the 90B preset) must stay with generate. No GPUs here:
    # only the map the loader would leave on the model is set.
    monkeypatch.setattr(tiny_mllama, "hf_device_map", {"model.vision_model": 0, "model.language_model": 1},
                        raising=False)
    assert not supports(tiny_mllama)


def test_pick_batch_size_from_free_memory():
    rb = row_bytes(num_self_layers=32, num_cross_layers=8, num_kv_heads=8, head_dim=128, max_len=704,
                   cross_len=6404, vocab_size=128256, hidden_size=4096)
    # 11B shape: ~92 MB of self-attention and ~210 MB of cross-attention cache per row.
    assert 85e6 < rb.self_kv < 100e6 and 200e6 < rb.cross_kv < 220e6
    assert pick_batch_size(58 * GIB, rb.total, reserve_bytes=8 * GIB, max_batch=256) == 176
    assert pick_batch_size(58 * GIB, rb.total, reserve_bytes=8 * GIB) == 64
    assert pick_batch_size(10 * GIB, rb.total, reserve_bytes=8 * GIB) == 7  # under one multiple: exact
    assert pick_batch_size(1 * GIB, rb.total, reserve_bytes=8 * GIB) == 1
    with pytest.raises(ValueError):
        pick_batch_size(GIB, 0)


def test_fp8_decode_weights_stay_close_to_the_full_precision_step(tiny_mllama):
    """FP8 (opt-in, Hopper in production) runs on the CPU too (torch._scaled_mm): the decode
    GEMMs read float8 e4m3 weights with per-row scales; not exact, so the first decoded
    step's logits are compared, as docs/gpu.md does on the 11B shape."""
    from extractor.engine.mllama_decode import Fp8Weight

    batch = _batch(lengths=[6, 9], tiles=[1, 2], seed=3)

    def first_step_logits(**kwargs):
        return _first_step(tiny_mllama, batch, 4, **kwargs)

    full_engine, full_tokens, full = first_step_logits()
    fp8_engine, fp8_tokens, fp8 = first_step_logits(fp8=True)
    layer = fp8_engine.weights.layers[0]
    assert isinstance(fp8_engine.weights.lm_head, Fp8Weight) and layer.wo.q.element_size() == 1
    assert not isinstance(full_engine.weights.lm_head, Fp8Weight)
    rel = float((fp8 - full).norm() / full.norm())
    assert 0 < rel < 0.1, rel  # not exact, and close
    assert fp8_tokens.shape == full_tokens.shape
    # "weight-only" marks every decode weight for the Triton kernel (engine/fp8_gemm.py, CUDA
    # only, checked against a dequantized reference by bench/gpu_decode_kernels.py); on the
    # CPU those GEMMs take the _scaled_mm path, so the step is the per-row one.
    wo_engine, _, wo = first_step_logits(fp8="weight-only")
    assert {lw.wo.kernel for lw in wo_engine.weights.layers} == {"w8a16"}
    assert wo_engine.weights.lm_head.kernel == "w8a16"
    assert torch.equal(wo, fp8)
    # HF's own modules keep their full-precision weights (the prefill runs on them)
    assert tiny_mllama.lm_head.weight.dtype == torch.float32


def test_fp8_prefill_runs_every_prefill_linear_in_fp8_and_puts_hf_back(tiny_mllama, monkeypatch):
    """``fp8_prefill``: the prefill's linear layers (vision tower, projector, text layers)
    become row-scaled FP8 GEMMs inside the engine's prefill only; the text layers reuse the
    decode's FP8 copies (row slices of the fused ones), and HF's forward is back afterwards."""
    from extractor.engine import fp8_prefill
    from extractor.engine.fp8_prefill import fp8_prefill_table
    from extractor.engine.mllama_decode import Fp8Weight

    batch = _batch(lengths=[6, 9], tiles=[1, 2], seed=3)

    def first_step_logits(**kwargs):
        engine = MllamaStaticEngine(tiny_mllama, fuse_weights=True, **kwargs)
        recorded = engine.record_step_logits()
        engine.generate(**batch, max_new_tokens=4)
        return engine, recorded[0]

    def dequantized(x, weight, bias, quant):  # what _scaled_mm computes, in float32
        xq, xs = quant(x)
        w = weight.q.to(torch.float32) * weight.scale.reshape(-1, 1)
        out = (xq.to(torch.float32) * xs) @ w.t()
        return (out if bias is None else out + bias).reshape(*x.shape[:-1], -1).to(x.dtype)

    _, full = first_step_logits()
    _, fp8 = first_step_logits(fp8=True)
    engine, fp8_both = first_step_logits(fp8=True, fp8_prefill=True)
    assert not torch.equal(fp8_both, fp8)  # the prefill itself changed
    rel_decode, rel_both = (float((v - full).norm() / full.norm()) for v in (fp8, fp8_both))
    assert 0 < rel_decode < 0.1 and 0 < rel_both < 0.2, (rel_decode, rel_both)  # tiny random model: coarse
    monkeypatch.setattr(fp8_prefill, "fp8_linear", dequantized)
    _, reference = first_step_logits(fp8=True, fp8_prefill=True)
    assert float((fp8_both - reference).norm() / reference.norm()) < 1e-4  # right weights, scales, rows
    linears = [m for m in tiny_mllama.modules() if isinstance(m, torch.nn.Linear)]
    assert not any("forward" in vars(m) for m in linears)  # HF's forward is back
    table = dict(fp8_prefill_table(tiny_mllama, engine.weights))
    assert set(table) == {m for m in linears if m is not tiny_mllama.lm_head}
    layer, lw = tiny_mllama.model.language_model.layers[0], engine.weights.layers[0]
    k = table[layer.self_attn.k_proj]
    assert k.q.untyped_storage().data_ptr() == lw.wqkv.q.untyped_storage().data_ptr()  # shared bytes
    assert torch.equal(k.q.float(), lw.wqkv.q[4 * 16:6 * 16].float())  # q rows, then k's
    for lin, w in table.items():  # each module got its own rows: the dequantized weight is its weight
        assert isinstance(w, Fp8Weight) and w.q.element_size() == 1
        dequant = w.q.to(torch.float32) * w.scale.reshape(-1, 1)
        assert float((dequant - lin.weight.detach()).norm() / lin.weight.detach().norm()) < 0.05
    with pytest.raises(ValueError, match="per-row FP8"):
        MllamaStaticEngine(tiny_mllama, fp8_prefill=True)


def test_fp8_prefill_modules_stay_switched_while_any_thread_is_inside(tiny_mllama):
    import threading

    from extractor.engine.fp8_prefill import Fp8Prefill, fp8_linear
    from extractor.engine.mllama_decode import Fp8Weight, quantize_rows

    lin = tiny_mllama.model.multi_modal_projector
    weight = Fp8Weight.of(lin.weight)
    switch = Fp8Prefill([(lin, weight)])
    inside, leave = threading.Event(), threading.Event()

    def other():
        with switch.active():
            inside.set()
            leave.wait(10)

    with switch.active():
        worker = threading.Thread(target=other)
        worker.start()
        assert inside.wait(10) and "forward" in vars(lin)
    assert "forward" in vars(lin)  # the other thread is still inside
    leave.set()
    worker.join(10)
    assert "forward" not in vars(lin)
    x = torch.randn(3, 5, lin.in_features)
    dequant = weight.q.float() * weight.scale.reshape(-1, 1)
    with torch.no_grad():
        ref = torch.nn.functional.linear(x, dequant, lin.bias)
        got = fp8_linear(x, weight, lin.bias, lambda t: quantize_rows(t.reshape(-1, t.shape[-1])))
    assert got.shape == ref.shape and float((got - ref).norm() / ref.norm()) < 0.05


@pytest.mark.parametrize("kv", [dict(cross_kv="fp8"), dict(self_kv="fp8"), dict(cross_kv="fp8", self_kv="fp8")])
def test_fp8_keys_values_stay_close_and_refill_alike(tiny_mllama, kv):
    """``cross_kv="fp8"``: the image's keys/values are kept as float8 e4m3 with a scale per row
    and head, quantized once at the prefill; ``self_kv="fp8"``: the self-attention cache, with a
    scale per token and head, each step's key/value quantized as it is written (also for rows
    that join a running batch, at their ring positions). On the CPU the float32 references read
    and write them; the Triton kernels equal those references (tests/unit/test_fp8_attention.py,
    under Triton's interpreter)."""
    batch = _batch(lengths=[6, 9, 7, 8], tiles=[2, 2, 1, 1], seed=3)

    def first_step(**kwargs):
        return _first_step(tiny_mllama, batch, 6, **kwargs)

    _, _, full = first_step()
    for trim in (True, False):  # False: the 1-tile rows mask their padding tile with the bias
        engine, tokens, fp8 = first_step(trim_cross_tiles=trim, **kv)
        st = engine._state
        if "cross_kv" in kv:
            assert st.cross_k[0].dtype == torch.float8_e4m3fn and st.cross_v_scale[0].shape == st.cross_k[0].shape[:2]
            assert bool((st.cross_k_scale[0] != 1).all())  # every row's scale written at its prefill
        else:
            assert st.cross_k[0].dtype == torch.float32 and st.cross_k_scale is None
        if "self_kv" in kv:
            assert st.self_k[0].dtype == torch.float8_e4m3fn and st.self_v_scale[0].shape == st.self_k[0].shape[:3]
            written = st.self_k_scale[0] > 0  # the prompt's tokens (padding too, as in HF's cache) and the steps'
            assert bool(written.permute(0, 2, 1)[st.self_valid].all())  # every slot a row may look at
            assert not bool(written[:, :, int(st.cur):].any())  # and none past the last step's
        rel = float((fp8 - full).norm() / full.norm())
        assert 0 < rel < 0.05, rel  # not exact, and close
    # the image still steers the tokens through the float8 keys/values
    other = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    assert not torch.equal(_engine(tiny_mllama, other, max_new=6, **kv), tokens)
    # rows joining a running batch get their own quantized keys/values: the same tokens as static batches
    lengths = [3, 6, 2, 5]
    refill = MllamaStaticEngine(tiny_mllama, max_batch=1, refill_check_every=1, refill_min_rows=1, **kv)
    static = MllamaStaticEngine(tiny_mllama, max_batch=1, refill=False, **kv)
    a = refill.generate(**batch, max_new_tokens=6, lengths=lengths)
    assert refill.stats["refilled_rows"] >= 1
    assert torch.equal(a, static.generate(**batch, max_new_tokens=6, lengths=lengths))
    for name in kv:
        with pytest.raises(ValueError, match=name):
            MllamaStaticEngine(tiny_mllama, **{name: "int8"})


def test_continuous_refill_gives_every_row_its_own_tokens(tiny_mllama):
    """Seven rows through two decode slots: rows stop at different steps (an EOS that the
    free run emits at various steps, and the length limit), waiting rows of the same tile
    count take the freed slots mid-batch (their prompts placed to end at the batch's
    current cache position), and every row's tokens and log-probabilities are still what
    generate gives it in one left-padded batch."""
    batch = _batch(lengths=[9, 7, 12, 6, 10, 8, 11], tiles=[2, 2, 2, 1, 2, 1, 1], seed=8)
    free_run = _reference(tiny_mllama, batch, max_new=14)
    eos = int(free_run[1, 2])  # row 1 stops after 3 tokens; others whenever they emit it
    old = tiny_mllama.generation_config.eos_token_id
    tiny_mllama.generation_config.eos_token_id = [eos, 2]
    try:
        want_tokens, want = _reference_logprobs(tiny_mllama, batch, max_new=14)
        engine = MllamaStaticEngine(tiny_mllama, max_batch=2, refill_check_every=1, refill_min_rows=1,
                                    eos_check_every=1)  # a short ring: it wraps within this test
        tokens, got = engine.generate(**batch, max_new_tokens=14, return_logprobs=True)
        static = MllamaStaticEngine(tiny_mllama, max_batch=2, refill=False).generate(**batch, max_new_tokens=14)
    finally:
        tiny_mllama.generation_config.eos_token_id = old
    assert engine.stats["refilled_rows"] >= 2  # rows did join running batches
    assert engine.stats["ring_laps"] >= 1  # and the cache ring wrapped round under them
    assert torch.equal(tokens, want_tokens) and torch.equal(static, want_tokens)
    stops = torch.isin(tokens, torch.tensor([eos, 2]))
    assert 0 < int(stops.any(-1).sum()) < 7  # some rows stopped early, some ran to the limit
    live = (stops.cumsum(1) - stops.long()) == 0
    assert torch.allclose(got[live], want[live], atol=1e-5)


def test_refill_with_exact_lengths_decodes_fewer_steps_than_static_batches(tiny_mllama):
    """The bench's length mix, small: with exact per-row lengths, static batches pay for
    each batch's longest row, refill only for the rows' own lengths."""
    batch = _batch(lengths=[8] * 6, tiles=[2] * 6, seed=9)
    lengths = [3, 12, 4, 11, 2, 10]
    refill = MllamaStaticEngine(tiny_mllama, max_batch=2, refill_check_every=1, refill_min_rows=1)
    static = MllamaStaticEngine(tiny_mllama, max_batch=2, refill=False)
    a = refill.generate(**batch, max_new_tokens=12, lengths=lengths)
    b = static.generate(**batch, max_new_tokens=12, lengths=lengths)
    assert torch.equal(a, b)
    assert [int((row != PAD).sum()) for row in a] == lengths
    assert refill.stats["decode_steps"] < static.stats["decode_steps"]


def test_rows_prefilled_ahead_join_with_the_same_tokens(tiny_mllama, monkeypatch):
    """Overlapped prefill (engine/prefetch.py; inline on the CPU): waiting rows are prefilled
    ahead in chunks of 3 and join one at a time (chunks taken in parts); a prefetch that fails
    leaves its rows to be prefilled when they join. Tokens equal generate's every way."""
    from extractor.engine import prefetch

    batch = _batch(lengths=[9, 7, 12, 6, 10, 8, 11], tiles=[2] * 7, seed=11)
    lengths = [3, 9, 2, 7, 5, 4, 8]
    want = MllamaStaticEngine(tiny_mllama, max_batch=7, refill=False).generate(**batch, max_new_tokens=9,
                                                                                lengths=lengths)
    kw = dict(max_batch=2, prefill_batch=3, refill_check_every=1, refill_min_rows=1, overlap_prefill=True)
    ahead = MllamaStaticEngine(tiny_mllama, **kw)
    assert torch.equal(ahead.generate(**batch, max_new_tokens=9, lengths=lengths), want)
    assert ahead.stats["prefetched_rows"] == 5  # every row after the first two
    assert torch.equal(MllamaStaticEngine(tiny_mllama, **{**kw, "overlap_prefill": False}).generate(
        **batch, max_new_tokens=9, lengths=lengths), want)

    real_run = prefetch.Prefetcher._run
    calls = []

    def fail_first(self, rows):
        calls.append(rows)
        return None if len(calls) == 1 else real_run(self, rows)

    monkeypatch.setattr(prefetch.Prefetcher, "_run", fail_first)
    failing = MllamaStaticEngine(tiny_mllama, **kw)
    assert torch.equal(failing.generate(**batch, max_new_tokens=9, lengths=lengths), want)
    assert failing.stats.get("prefetched_rows", 0) == 0  # the failure turned prefetching off


def test_compiled_decode_ops_with_fused_add_norm_match_generate(tiny_mllama):
    """The compiled step CUDA runs (Inductor on the CPU here): each residual add and the norm
    after it in one kernel, the gates and row mask inside it; the tokens stay generate's."""
    batch = _batch(lengths=[12, 9, 5], tiles=[2, 1, 2])
    ref = _reference(tiny_mllama, batch, max_new=14)
    engine = MllamaStaticEngine(tiny_mllama, compile_ops=True)
    assert engine.weights.ops.add_rms is not add_rms_norm  # compiled, not the eager function
    assert torch.equal(engine.generate(**batch, max_new_tokens=14), ref)
