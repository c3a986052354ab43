"""GPU throughput of receipt extraction with Llama 3.2 11B Vision: generate vs the project's engine.

Runs on the device machine (one H100/H200). The model is the real 11B configuration with
random weights built directly on the GPU in bf16 (speed does not depend on weight values;
the checkpoint cannot be downloaded here). Every receipt is a 400-token prompt with one
4-tile image and exactly ``--new`` new tokens (min_new_tokens == max_new_tokens), as in
../shared/bench/mllama_baseline.py, whose numbers the `generate` rows reproduce.

Sections (``--sections``, comma separated, run in this order):
  env       versions, card, measured copy bandwidth and bf16 matmul rate (the ceilings)
  check     correctness on the 11B shape: engine vs generate logits and tokens, left-padded
  engine    MllamaStaticEngine at ``--engine-batches`` (graph capture timed apart)
  variants  what each optimisation buys at batch 32: eager decode, no fused GEMMs, compiled ops
  profile   top GPU kernels of one eager engine decode step at batch 32
  tiles2    2-tile images: engine with/without dropping padding tiles, check, prefill split
  prefill   where a prefill goes (batch 8, 4 and 2 tiles): the vision tower and the whole HF
            forward with HF's masked attention, with the engine's mask-free prefill
            attention (engine/prefill_attention.py) and with the engine's own tower
            (engine/vision_tower.py, eager and compiled), the outputs' difference, and kernel
            profiles of HF's mask-free tower and of the engine's
  overlap   a stream of ``--overlap-receipts`` receipts through 32 decode slots: the next rows'
            prefill on a second stream while the batch decodes, against taking turns
  attention the vision tower's attention shape (8 images x 16 heads x 6,432 tokens, head dim
            80) through each SDPA kernel, unmasked, and head dim zero-padded to 96 / 128
  fp32check correctness on the 11B shape in float32 with the cross-attention gates opened (the
            image then changes the output): engine tokens against generate's for
            ``--check-steps`` steps, 4- and 2-tile, left-padded rows, mask-free prefill on and
            off, free and under the receipt grammar (same grammar both sides)
  generate  plain batched model.generate at ``--gen-batches``
  seed      the seed guide's loop: one receipt per generate call (``--seed-receipts``)
  grammar   schema-constrained decoding (the hf backend's default): engine at batch 32 with and
            without the receipt grammar, over a Llama-sized stand-in tokenizer (bench_tokenizer.py);
            decode ms/step, host mask time, how many outputs parse into a Receipt
  refill    continuous refill against static batches: ``--refill-receipts`` receipts with exact
            output lengths drawn from 80-300 tokens (seeded), 32 decode slots
  fp8       the engine with FP8 decode weights (opt-in) against bf16 at ``--engine-batches``:
            receipts/s, decode ms/step, and the first decoded step's logits against bf16;
            ``--fp8-ways`` picks the ways (``+prefill``: the prefill's GEMMs in FP8 too)
  fp8check  the FP8 prefill's first-step distance from a bf16 prefill against its dequantized
            reference and against bf16 with 0.4 % / 3.7 % relative noise per text GEMM
  crosskv   float8 cross-attention keys/values (``cross_kv="fp8"``, opt-in): one decode
            cross-attention call, bf16 SDPA against the float8 kernel at several tilings (and its
            error against the dequantized reference); the first step's logits with the gates
            opened; the engine with and without it at ``--engine-batches``
  fp8kv     float8 keys/values of the image and of the self-attention cache (``self_kv="fp8"``,
            opt-in): each kernel alone against bf16 SDPA (and the step's cache write), the first
            step's logits with the gates opened, the engine with each at ``--engine-batches``
  quant     generate with bitsandbytes 8-bit and 4-bit (needs the wheel; saves a checkpoint
            to /dev/shm first), batch ``--quant-batch``
Results go to stdout (one JSON line per run, a table at the end) and $OUT/gpu_throughput.json,
rewritten after every run so a timeout loses nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
try:
    import extractor  # noqa: F401
except ImportError:  # the device image has torch and transformers but not the ETL's own deps
    import types  # (pydantic, ...): load only the engine subpackage, which needs none of them

    _pkg = types.ModuleType("extractor")
    _pkg.__path__ = [str(Path(__file__).resolve().parents[1] / "include" / "extractor")]
    sys.modules["extractor"] = _pkg

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import MllamaConfig, MllamaForConditionalGeneration  # noqa: E402

CFG = {  # meta-llama/Llama-3.2-11B-Vision(-Instruct) config.json, as in the baseline script
    "image_token_index": 128256,
    "text_config": {
        "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128004,
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
        "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
        "max_position_embeddings": 131072, "num_attention_heads": 32,
        "num_hidden_layers": 40, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "vocab_size": 128256,
    },
    "vision_config": {
        "attention_heads": 16, "hidden_act": "gelu", "hidden_size": 1280, "image_size": 560,
        "intermediate_layers_indices": [3, 7, 15, 23, 30], "intermediate_size": 5120,
        "max_num_tiles": 4, "norm_eps": 1e-5, "num_channels": 3, "num_global_layers": 8,
        "num_hidden_layers": 32, "patch_size": 14,
        "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
        "vision_output_dim": 7680,
    },
}
SKIP_MODULES = ["model.vision_model", "model.multi_modal_projector", "lm_head"]  # transformers 5 names


def make_inputs(batch, prompt_len, dev, *, lengths=None, seed=0, tiles=4):
    """The baseline's inputs (<bos> <|image|> random text, 4 tiles of aspect ratio 4:1);
    with ``lengths``, rows are left-padded to ``prompt_len`` as the backend does; with
    ``tiles=2`` the image is 1:2 (2 tiles used, 2 zero padding tiles, as the processor
    pads them)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 120000, (batch, prompt_len), generator=g)
    attn = torch.ones_like(ids)
    xmask = torch.zeros(batch, prompt_len, 1, 4, dtype=torch.long)
    lengths = lengths or [prompt_len] * batch
    for b, n in enumerate(lengths):
        start = prompt_len - n
        ids[b, :start] = 128004
        attn[b, :start] = 0
        ids[b, start], ids[b, start + 1] = 128000, 128256
        xmask[b, start + 1:, :, :tiles] = 1
    pix = torch.randn(batch, 1, 4, 3, 560, 560, generator=g).to(torch.bfloat16)
    pix[:, :, tiles:] = 0
    ar_ids = torch.full((batch, 1), 8 if tiles == 4 else 2, dtype=torch.long)  # (4,1) or (1,2)
    ar_mask = torch.zeros(batch, 1, 4, dtype=torch.long)
    ar_mask[:, :, :tiles] = 1
    d = dict(input_ids=ids, attention_mask=attn, pixel_values=pix, aspect_ratio_ids=ar_ids,
             aspect_ratio_mask=ar_mask, cross_attention_mask=xmask)
    return {k: v.to(dev) for k, v in d.items()}


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t, r


class Recorder:
    def __init__(self, out_dir):
        self.path = Path(out_dir) / "gpu_throughput.json"
        self.data = {"runs": [], "errors": []}

    def put(self, key, value):
        self.data[key] = value
        self._flush()

    def run(self, row):
        row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        row.setdefault("gpu", torch.cuda.get_device_name(0))  # every row names its card
        self.data["runs"].append(row)
        print(json.dumps(row), flush=True)
        self._flush()

    def error(self, where):
        msg = traceback.format_exc()
        print(f"ERROR in {where}:\n{msg}", flush=True)
        self.data["errors"].append({"where": where, "traceback": msg[-3000:]})
        self._flush()

    def _flush(self):
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def build_model():
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MllamaForConditionalGeneration._from_config(MllamaConfig(**CFG), torch_dtype=torch.bfloat16)
    return model.eval()


# ------------------------------------------------------------------ sections
def section_env(rec):
    props = torch.cuda.get_device_properties(0)
    env = {"date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "torch": torch.__version__, "transformers": transformers.__version__,
           "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
           "gpu_mem_gib": round(props.total_memory / 2**30, 1), "sms": props.multi_processor_count}
    n = 2**30  # 2 GiB of bf16
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    dst.copy_(src)
    t, _ = timed(lambda: [dst.copy_(src) for _ in range(10)])
    env["copy_tb_s"] = round(10 * 2 * n * 2 / t / 1e12, 3)  # bytes read + written
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn_like(a)
    a @ b
    t, _ = timed(lambda: [a @ b for _ in range(10)])
    env["bf16_tflops"] = round(10 * 2 * 8192**3 / t / 1e12, 1)
    del a, b
    torch.cuda.empty_cache()
    rec.put("env", env)
    print(json.dumps(env), flush=True)
    return env


def section_check(rec, model, args):
    """Engine vs generate on a left-padded batch of 4 (prompt lengths 400/380/350/300)."""
    from extractor.engine import MllamaStaticEngine

    lengths = [300, 350, 380, 400]  # ascending: the engine's bucket order, so logits line up
    x = make_inputs(4, 400, "cuda", lengths=lengths, seed=1)
    steps = args.check_steps
    with torch.inference_mode():
        ref = model.generate(**x, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                             output_logits=True, output_scores=True, return_dict_in_generate=True)
    ref_tokens = ref.sequences[:, 400:].cpu()
    ref_logp = torch.stack([torch.log_softmax(s.float(), -1).gather(1, ref.sequences[:, 400 + i:401 + i])[:, 0]
                            for i, s in enumerate(ref.scores)], dim=1).cpu()
    eager = MllamaStaticEngine(model, use_cuda_graphs=False, fuse_weights=True)
    recorded = eager.record_step_logits()
    eager_tokens = eager.generate(**x, max_new_tokens=steps, min_new_tokens=steps)
    eager.release()
    graph = MllamaStaticEngine(model, max_batch=4)
    graph_tokens, graph_logp = graph.generate(**x, max_new_tokens=steps, min_new_tokens=steps,
                                              return_logprobs=True)
    graph.release()

    def rel(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    def matching_prefix(a, b):
        same = (a == b).long().cumprod(-1).sum(-1)
        return [int(v) for v in same]

    # Logits of the first engine-decoded step (token 2), both sides fed the same token 1.
    first = {"rel_diff": rel(recorded[0], ref.logits[1]),
             "max_abs_diff": float((recorded[0] - ref.logits[1].float()).abs().max()),
             "argmax_equal_rows": int((recorded[0].argmax(-1) == ref.logits[1].argmax(-1)).sum())}
    per_step = []
    for i, logits in enumerate(recorded, start=1):  # valid comparison while the tokens still agree
        per_step.append(round(rel(logits, ref.logits[i]), 5))
    # The noise floor: generate itself, same row, batch 1 instead of batch 4 (other kernels).
    with torch.inference_mode():
        single = model.generate(**{k: v[3:4] for k, v in x.items()}, max_new_tokens=steps, min_new_tokens=steps,
                                do_sample=False, output_logits=True, return_dict_in_generate=True)
    noise = {"generate_b1_vs_b4_rel_diff_step1": rel(single.logits[1][0], ref.logits[1][3]),
             "engine_vs_generate_b1_rel_diff_step1": rel(recorded[0][3], single.logits[1][0]),
             "generate_b1_vs_b4_matching_steps": matching_prefix(single.sequences[:, 400:].cpu(),
                                                                 ref_tokens[3:4])[0]}
    result = {"rows": 4, "prompt_lengths": lengths, "steps": steps, "noise_floor": noise,
              "first_decode_step_logits": first,
              "rel_diff_per_step_row_agnostic": per_step[:16],
              "graph_vs_generate_matching_steps": matching_prefix(graph_tokens, ref_tokens),
              "eager_vs_generate_matching_steps": matching_prefix(eager_tokens, ref_tokens),
              "graph_equals_eager": bool(torch.equal(graph_tokens, eager_tokens)),
              "chosen_token_logprob_vs_generate": _logprob_agreement(graph_tokens, graph_logp, ref_tokens, ref_logp),
              "graph_vs_eager_matching_steps": matching_prefix(graph_tokens, eager_tokens)}
    rec.put("check", result)
    print(json.dumps(result), flush=True)
    del ref
    torch.cuda.empty_cache()


def _logprob_agreement(tokens, logp, ref_tokens, ref_logp):
    """Per-field confidence's inputs: the engine's chosen-token log-probabilities against
    generate's log-softmax of its processed scores, over each row's steps before the first
    token that differs (after it the two sides score different prefixes)."""
    agree = (tokens == ref_tokens).long().cumprod(-1).bool()
    diff = (logp - ref_logp).abs()[agree]
    prob_diff = (logp.exp() - ref_logp.exp()).abs()[agree]
    return {"steps_compared": int(agree.sum()), "max_abs_logprob_diff": float(diff.max()),
            "max_abs_prob_diff": float(prob_diff.max()), "mean_abs_prob_diff": float(prob_diff.mean())}


def run_engine(rec, model, batch, args, *, label="engine", repeat=True, new=None, tiles=4, **kwargs):
    from extractor.engine import MllamaStaticEngine

    new = new or args.new
    x = make_inputs(batch, args.prompt, "cuda", tiles=tiles)
    engine = MllamaStaticEngine(model, max_batch=batch, **kwargs)
    torch.cuda.reset_peak_memory_stats()
    first_s, out = timed(lambda: engine.generate(**x, max_new_tokens=new, min_new_tokens=new))
    capture_s = engine.stats.get("capture_s", 0.0)
    stats = dict(engine.stats)
    total_s = first_s
    if repeat:  # steady state: graph and buffers already there, as for every later batch
        total_s, out = timed(lambda: engine.generate(**x, max_new_tokens=new, min_new_tokens=new))
        stats = dict(engine.stats)
    assert out.shape == (batch, new), out.shape
    row = {"way": label, "batch": batch, "new": new, "receipts_per_s": batch / total_s,
           "total_s": total_s, "first_call_s": first_s, "capture_s": capture_s,
           "prefill_s": stats["prefill_s"], "prefill_ms_per_receipt": 1000 * stats["prefill_s"] / batch,
           "decode_ms_per_step": 1000 * stats["decode_s"] / max(stats["decode_steps"], 1),
           "new_tokens_per_s": batch * new / total_s,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
           "cuda_graph": stats.get("cuda_graph"), "graph_error": stats.get("graph_error"),
           "decode_batches": stats.get("batches")}
    rec.run(row)
    engine.last_output = out
    return engine, x


@torch.inference_mode()
def time_graph_replay(engine, n=50):
    """Median-free quick figure: mean ms of ``n`` back-to-back replays of the step graph."""
    st = engine._state

    def rewind():  # every replay advances slot, position and step: keep them in range
        st.cur.fill_(400)
        st.pos.fill_(400)

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rewind()
    engine._graph[0].replay()
    start.record()
    for _ in range(n):
        rewind()
        engine._graph[0].replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def decode_bytes(engine):
    """Bytes one decode step must read: weights it multiplies by + the whole static cache."""
    w, st = engine.weights, engine._state
    weights = sum(t.numel() * t.element_size() for lw in w.layers
                  for t in ([lw.wq, lw.wo, lw.wd, lw.wg, lw.wu] + ([] if lw.cross else [lw.wk, lw.wv])))
    weights += w.lm_head.numel() * w.lm_head.element_size()
    cache = sum(t.numel() * t.element_size() for t in st.self_k + st.self_v)
    cross = sum(t.numel() * t.element_size() for t in st.cross_k + st.cross_v if t is not None)
    return {"weights_gb": weights / 1e9, "self_kv_gb": cache / 1e9, "cross_kv_gb": cross / 1e9}


def section_engine(rec, model, args, env):
    for batch in [int(b) for b in args.engine_batches.split(",")]:
        try:
            engine, _ = run_engine(rec, model, batch, args)
            if engine._graph is None:
                engine.release()
                continue
            replay_ms = time_graph_replay(engine)
            bytes_ = decode_bytes(engine)
            total_gb = sum(bytes_.values())
            floor = {"way": "floor", "batch": batch, **{k: round(v, 2) for k, v in bytes_.items()},
                     "step_bytes_gb": round(total_gb, 2), "graph_replay_ms": round(replay_ms, 2),
                     "floor_ms_at_copy_bw": round(total_gb / env.get("copy_tb_s", 3.0), 2),
                     "achieved_tb_s": round(total_gb / replay_ms, 3)}
            rec.run(floor)
            engine.release()
            del engine
        except torch.cuda.OutOfMemoryError:
            rec.error(f"engine batch {batch} (out of memory)")
        torch.cuda.empty_cache()


VARIANTS = {  # name: (label, engine kwargs, new tokens or None for --new)
    "eager": ("engine eager decode (no CUDA graph, no compile)", dict(use_cuda_graphs=False, compile_ops=False), 32),
    "unfused": ("engine graphs, unfused GEMMs, no compile", dict(fuse_weights=False, compile_ops=False), None),
    "nocompile": ("engine graphs, fused, no compiled ops", dict(compile_ops=False), None),
    "cudnn": ("engine + cuDNN-first SDPA in prefill",
              dict(prefill_sdpa_backends=("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")),
              None),
    "prefill16": ("engine, prefill 16 rows per call", dict(prefill_batch=16), None),
    "hfvision": ("engine, HF's masked attention in prefill", dict(mask_free_prefill=False), None),
    # per-field confidence: each step also writes the chosen token's log-probability (the default)
    "score": ("engine, token scoring on (default)", {}, None),
    "noscore": ("engine, token scoring off", dict(score_tokens=False), None),
    # each residual add and the RMSNorm after it as one compiled kernel (the default) or two
    "fused": ("engine, add+norm fused (default)", {}, None),
    "nofusion": ("engine, add and norm separate", dict(fuse_add_norm=False), None),
    # the prefill's vision tower: the engine's own (engine/vision_tower.py, the default) or HF's
    "owntower": ("engine, own vision tower (default)", {}, None),
    "hftower": ("engine, HF's vision tower (mask-free attention)", dict(own_vision_tower=False), None),
}


def section_variants(rec, model, args):
    b = 32
    reference = None
    for name in args.variants.split(","):
        label, kw, new = VARIANTS[name]
        engine = None
        try:
            engine, _ = run_engine(rec, model, b, args, label=label, new=new, **kw)
            if engine._graph is not None:
                rec.run({"way": label, "batch": b, "graph_replay_ms": round(time_graph_replay(engine), 2)})
            out = engine.last_output
            if reference is None and new is None:
                reference = out
            elif new is None:
                same = (out == reference).long().cumprod(-1).sum(-1)
                rec.run({"way": label, "batch": b, "tokens_vs_first_variant_matching_steps_min": int(same.min()),
                         "rows_identical": int((same == out.shape[1]).sum())})
        except Exception:
            rec.error(f"variant {label}")
        if engine is not None:
            engine.release()
        del engine
        torch.cuda.empty_cache()


@torch.inference_mode()
def section_profile(rec, model, args):
    from torch.profiler import ProfilerActivity, profile

    from extractor.engine import MllamaStaticEngine
    from extractor.engine.mllama_decode import decode_step

    x = make_inputs(32, args.prompt, "cuda")
    engine = MllamaStaticEngine(model, max_batch=32, use_cuda_graphs=True)
    engine.generate(**x, max_new_tokens=8, min_new_tokens=8)
    st = engine._state

    def rewind():
        st.cur.fill_(400)
        st.pos.fill_(400)

    rewind()
    decode_step(engine.weights, st)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            rewind()
            decode_step(engine.weights, st)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=70)
    print(table, flush=True)
    (Path(args.out) / "decode_step_profile.txt").write_text(table)
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    n_kernels = sum(e.count for e in events) / 3
    gpu_ms = sum(e.self_device_time_total for e in events) / 3 / 1000
    kinds = {"gemm": ("nvjet", "gemm", "splitk", "cutlass"), "attention": ("sdpa", "fmha", "flash", "attention")}
    split = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    counts = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    for e in events:
        kind = next((k for k, pats in kinds.items() if any(p in e.key.lower() for p in pats)), "other")
        split[kind] += e.self_device_time_total / 3 / 1000
        counts[kind] += e.count / 3
    rec.put("profile", {"batch": 32, "kernels_per_step": n_kernels, "gpu_kernel_ms_per_step": round(gpu_ms, 2),
                        "kernel_ms_by_kind": {k: round(v, 3) for k, v in split.items()},
                        "kernels_by_kind": counts, "gpu": torch.cuda.get_device_name(0)})
    engine.release()
    torch.cuda.empty_cache()


def section_tiles2(rec, model, args):
    """Receipts whose image uses 2 of the 4 tiles: engine with and without dropping the
    padding tiles' keys/values, a short correctness check against generate, and how the
    prefill splits between the vision tower and the rest."""
    from extractor.engine import MllamaStaticEngine

    for label, kw in [("engine, 2-tile images (padding tiles dropped)", {}),
                      ("engine, 2-tile images (masked, not dropped)", dict(trim_cross_tiles=False))]:
        engine = None
        try:
            engine, _ = run_engine(rec, model, 32, args, label=label, tiles=2, **kw)
            rec.run({"way": label, "batch": 32, "graph_replay_ms": round(time_graph_replay(engine), 2),
                     "cross_tokens_kept": engine._state.cross_k[0].shape[2]})
        except Exception:
            rec.error(label)
        if engine is not None:
            engine.release()
        del engine
        torch.cuda.empty_cache()
    x = make_inputs(4, 400, "cuda", lengths=[300, 350, 380, 400], seed=2, tiles=2)
    with torch.inference_mode():
        ref = model.generate(**x, max_new_tokens=32, min_new_tokens=32, do_sample=False)[:, 400:].cpu()
        got = MllamaStaticEngine(model, max_batch=4).generate(**x, max_new_tokens=32, min_new_tokens=32)
        same = (got == ref).long().cumprod(-1).sum(-1)
        rec.put("check_tiles2", {"engine_vs_generate_matching_steps": [int(v) for v in same]})
        print(json.dumps(rec.data["check_tiles2"]), flush=True)
        x8 = make_inputs(8, 400, "cuda")
        vm = model.model.vision_model
        tv, _ = timed(lambda: vm(pixel_values=x8["pixel_values"], aspect_ratio_ids=x8["aspect_ratio_ids"],
                                 aspect_ratio_mask=x8["aspect_ratio_mask"]))
        tv, _ = timed(lambda: vm(pixel_values=x8["pixel_values"], aspect_ratio_ids=x8["aspect_ratio_ids"],
                                 aspect_ratio_mask=x8["aspect_ratio_mask"]))
        tp, _ = timed(lambda: model(**x8, use_cache=False, logits_to_keep=1))
    rec.put("prefill_split", {"batch": 8, "vision_tower_ms_per_receipt": round(1000 * tv / 8, 1),
                              "whole_prefill_ms_per_receipt": round(1000 * tp / 8, 1)})
    print(json.dumps(rec.data["prefill_split"]), flush=True)


def _tower_fn(model, x):
    tower = model.model.vision_model
    return lambda: tower(pixel_values=x["pixel_values"], aspect_ratio_ids=x["aspect_ratio_ids"],
                         aspect_ratio_mask=x["aspect_ratio_mask"]).last_hidden_state


def _ms_per_receipt(fn, batch, reps=3):
    fn()
    t, out = timed(lambda: [fn() for _ in range(reps)][-1])
    return 1000 * t / reps / batch, out


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def _own_prefill_fn(model, tower, x):
    """The engine's prefill forward: its own tower, HF's projector and text model."""
    inner = model.model
    rest = {k: v for k, v in x.items() if k != "pixel_values"}

    def fn():
        s = tower(x["pixel_values"], x["aspect_ratio_ids"], x["aspect_ratio_mask"])
        s = inner.multi_modal_projector(s).reshape(-1, s.shape[-2], inner.hidden_size)
        return model(**rest, cross_attention_states=s, use_cache=True, logits_to_keep=1).logits
    return fn


@torch.inference_mode()
def _prefill_split(rec, model, x, b, tiles):
    """The vision tower alone and the whole prefill per receipt: HF's tower with HF's masked
    attention, with the mask-free attention, and the engine's own tower (eager, compiled);
    each output's relative difference from the mask-free HF tower's (and its logits')."""
    from extractor.engine.prefill_attention import prefill_attention
    from extractor.engine.vision_tower import VisionTower

    outs, logits = {}, {}
    ways = [("mask-free", True, None), ("hf", False, None),
            ("own tower", True, VisionTower(model.model.vision_model)),
            ("own tower compiled", True, VisionTower(model.model.vision_model, compile_ops=True))]
    for name, split, tower in ways:
        with prefill_attention(model, split):
            if tower is None:
                tower_fn, full_fn = _tower_fn(model, x), lambda: model(**x, use_cache=True, logits_to_keep=1).logits
            else:
                tower_fn = lambda t=tower: t(x["pixel_values"], x["aspect_ratio_ids"], x["aspect_ratio_mask"])  # noqa: E731
                full_fn = _own_prefill_fn(model, tower, x)
            torch.cuda.reset_peak_memory_stats()
            tower_ms, outs[name] = _ms_per_receipt(tower_fn, b)
            tower_peak = torch.cuda.max_memory_allocated() / 2**30
            full_ms, logits[name] = _ms_per_receipt(full_fn, b)
        rec.run({"way": f"prefill, {name} attention" if tower is None else f"prefill, {name}", "batch": b,
                 "tiles": tiles, "vision_tower_ms_per_receipt": tower_ms, "prefill_ms_per_receipt": full_ms,
                 "text_and_rest_ms_per_receipt": full_ms - tower_ms, "tower_peak_gib": tower_peak,
                 "tower_rel_diff_vs_mask_free": _rel(outs[name], outs.get("mask-free", outs[name])),
                 "last_logits_rel_diff_vs_mask_free": _rel(logits[name], logits.get("mask-free", logits[name]))})


@torch.inference_mode()
def _prefill_profile(rec, model, x, way: str = "hf"):
    """Kernel profile of one prefill of ``x``: ``hf`` HF's tower (mask-free attention), ``own``
    the engine's tower, ``whole`` the engine's whole prefill forward (own tower, projector, text)."""
    from torch.profiler import ProfilerActivity, profile

    from extractor.engine.prefill_attention import prefill_attention
    from extractor.engine.vision_tower import VisionTower

    with prefill_attention(model):
        if way == "hf":
            fn = _tower_fn(model, x)
        else:
            tower = VisionTower(model.model.vision_model, compile_ops=True)
            fn = (_own_prefill_fn(model, tower, x) if way == "whole" else
                  lambda: tower(x["pixel_values"], x["aspect_ratio_ids"], x["aspect_ratio_mask"]))
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=90)
    print(table, flush=True)
    name = {"hf": "prefill_tower_profile.txt", "own": "prefill_tower_profile_own.txt",
            "whole": "prefill_profile_whole_own_tower.txt"}[way]
    (Path(rec.path).parent / name).write_text(table)


def section_prefill(rec, model, args):
    b = 8
    for tiles in (4, 2):
        try:
            _prefill_split(rec, model, make_inputs(b, args.prompt, "cuda", tiles=tiles), b, tiles)
        except Exception:
            rec.error(f"prefill split, {tiles} tiles")
        torch.cuda.empty_cache()
    for way in ("hf", "own", "whole"):
        try:
            _prefill_profile(rec, model, make_inputs(b, args.prompt, "cuda"), way)
        except Exception:
            rec.error(f"prefill profile ({way})")
        torch.cuda.empty_cache()


def section_overlap(rec, model, args):
    n = args.overlap_receipts
    for label, kw in (("engine, 32 slots, prefill overlapped, decode prioritised",
                       dict(overlap_prefill=True, decode_priority=True)),
                      ("engine, 32 slots, prefill overlapped", dict(overlap_prefill=True)),
                      ("engine, 32 slots, prefill then decode (the default)", {})):
        try:
            engine, _ = _run_stream(rec, model, n, args, label, kw)
            engine.release()
        except Exception:
            rec.error(label)
        torch.cuda.empty_cache()


def _run_stream(rec, model, n, args, label, kw):
    from extractor.engine import MllamaStaticEngine

    x = make_inputs(n, args.prompt, "cuda")
    engine = MllamaStaticEngine(model, max_batch=32, **kw)
    engine.generate(**x, max_new_tokens=args.new, min_new_tokens=args.new)  # graph, compile, warm
    total_s, out = timed(lambda: engine.generate(**x, max_new_tokens=args.new, min_new_tokens=args.new))
    st = engine.stats
    rec.run({"way": label, "batch": 32, "receipts": n, "new": args.new, "receipts_per_s": n / total_s,
             "total_s": total_s, "host_prefill_s": st["prefill_s"], "decode_s": st["decode_s"],
             "decode_ms_per_step": 1000 * st["decode_s"] / max(st["decode_steps"], 1),
             "prefetched_rows": st.get("prefetched_rows", 0), "refilled_rows": st.get("refilled_rows", 0),
             "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
    return engine, x


@torch.inference_mode()
def section_attention(rec, model, args):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, n, d = 8, 16, 6432, 80
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flop = 4 * b * h * n * n * d
    for dim in (80, 96, 128):
        qq, kk, vv = (F.pad(t, (0, dim - d)) if dim > d else t for t in (q, k, v))
        for name in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
            try:
                with sdpa_kernel([getattr(SDPBackend, name)]):
                    ms = _attention_ms(F, qq, kk, vv, d ** -0.5)
                rec.run({"way": f"attention {name} head dim {dim}", "batch": b, "ms": ms,
                         "tflops_at_80": flop / (ms / 1000) / 1e12})
            except Exception:
                rec.error(f"attention {name} {dim}")


def _attention_ms(F, q, k, v, scale, reps=5):
    F.scaled_dot_product_attention(q, k, v, scale=scale)
    t, _ = timed(lambda: [F.scaled_dot_product_attention(q, k, v, scale=scale) for _ in range(reps)])
    return 1000 * t / reps


def build_fp32_open_gates():
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MllamaForConditionalGeneration._from_config(MllamaConfig(**CFG), torch_dtype=torch.float32).eval()
    from extractor.testing.tiny_models import open_cross_attention_gates

    open_cross_attention_gates(model, attn=0.9, mlp=-0.7)  # fresh gates are 0: the image would not matter
    return model


def _matching(a, b):
    return [int(v) for v in (a == b).long().cumprod(-1).sum(-1)]


@torch.inference_mode()
def _fp32_case(rec, model, x, steps, tiles, grammar=None, tokenizer=None):
    from extractor.engine import MllamaStaticEngine

    kw = dict(max_new_tokens=steps) if grammar is not None else dict(max_new_tokens=steps, min_new_tokens=steps)
    procs = None
    if grammar is not None:
        from transformers import LogitsProcessorList

        from extractor.backends.grammar import grammar_logits_processor

        procs = LogitsProcessorList([grammar_logits_processor(grammar.new_batch(4, steps))])
    ref = model.generate(**x, do_sample=False, logits_processor=procs, **kw)[:, x["input_ids"].shape[1]:].cpu()
    row = {"way": "fp32 check" + (" + receipt grammar" if grammar is not None else ""), "tiles": tiles,
           "steps": steps, "batch": 4}
    for label, ekw in (("engine", {}), ("engine_eager", dict(use_cuda_graphs=False)),
                       ("engine_hf_prefill_attention", dict(mask_free_prefill=False))):
        engine = MllamaStaticEngine(model, max_batch=4, **ekw)
        out = engine.generate(**x, grammar=grammar, **kw)
        engine.release()
        width = min(out.shape[1], ref.shape[1])
        row[f"{label}_matching_steps"] = _matching(out[:, :width], ref[:, :width])
        row[f"{label}_equal"] = bool(out.shape == ref.shape and torch.equal(out, ref))
    if tokenizer is not None:
        row["parsed"] = _parse_rate(tokenizer, ref)[0]
    rec.run(row)


def section_fp32check(rec, args):
    from bench_tokenizer import llama_sized_tokenizer

    from extractor.backends.grammar import ReceiptGrammar

    model = build_fp32_open_gates()
    tokenizer = llama_sized_tokenizer()
    grammar = ReceiptGrammar(tokenizer, model.lm_head.weight.shape[0], [tokenizer.eos_token_id])
    lengths = [300, 350, 380, 400]
    for tiles in (4, 2):
        x = make_inputs(4, 400, "cuda", lengths=lengths, seed=1, tiles=tiles)
        for g in (None, grammar):
            try:
                _fp32_case(rec, model, x, args.check_steps, tiles, g, tokenizer if g is not None else None)
            except Exception:
                rec.error(f"fp32check tiles {tiles} grammar {g is not None}")
    del model
    torch.cuda.empty_cache()


def run_generate(rec, model, batch, args, label="generate", new=None):
    new = new or args.new
    x = make_inputs(batch, args.prompt, model.device)
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        tp, _ = timed(lambda: model(**x, use_cache=False, logits_to_keep=1))
        tg, out = timed(lambda: model.generate(**x, max_new_tokens=new, min_new_tokens=new, do_sample=False))
    row = {"way": label, "batch": batch, "new": new, "receipts_per_s": batch / tg, "total_s": tg,
           "prefill_s": tp, "prefill_ms_per_receipt": 1000 * tp / batch,
           "decode_ms_per_step": 1000 * (tg - tp) / new, "new_tokens_per_s": batch * new / tg,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    rec.run(row)


def section_generate(rec, model, args):
    with torch.inference_mode():
        x = make_inputs(1, 64, model.device)
        model.generate(**x, max_new_tokens=8, do_sample=False)  # warm-up
    for batch in [int(b) for b in args.gen_batches.split(",")]:
        try:
            run_generate(rec, model, batch, args)
        except torch.cuda.OutOfMemoryError:
            rec.error(f"generate batch {batch} (out of memory)")
        torch.cuda.empty_cache()


def section_seed(rec, model, args):
    n = args.seed_receipts
    x = make_inputs(n, args.prompt, model.device)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(n):
            one = {k: v[i:i + 1] for k, v in x.items()}
            model.generate(**one, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    rec.run({"way": "seed loop (one receipt per generate)", "batch": 1, "receipts": n, "new": args.new,
             "receipts_per_s": n / total, "total_s": total,
             "peak_gib": torch.cuda.max_memory_allocated() / 2**30})


def _parse_rate(tokenizer, out) -> tuple[int, float]:
    """How many rows of ``out`` parse into a ``Receipt`` (JSON repair + validation), and the
    mean number of new tokens per row (up to its EOS)."""
    from extractor import jsonrepair
    from extractor.schema import Receipt

    ok, lengths = 0, []
    for row in out.tolist():
        n = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        lengths.append(n)
        try:
            Receipt.model_validate(jsonrepair.drop_placeholders(jsonrepair.extract_json(
                tokenizer.decode(row[:n], skip_special_tokens=True))))
            ok += 1
        except Exception:  # noqa: BLE001 - counted, not raised: the rate is the result
            pass
    return ok, sum(lengths) / len(lengths)


def section_grammar(rec, model, args):
    from bench_tokenizer import llama_sized_tokenizer

    from extractor.backends.grammar import ReceiptGrammar
    from extractor.engine import MllamaStaticEngine

    t0 = time.perf_counter()
    tokenizer = llama_sized_tokenizer()
    grammar = ReceiptGrammar(tokenizer, model.lm_head.weight.shape[0], [tokenizer.eos_token_id])
    rec.put("grammar_setup_s", round(time.perf_counter() - t0, 2))
    batch, new = 32, args.new
    x = make_inputs(batch, args.prompt, "cuda")
    for label, g in (("engine, free (no grammar), not pinned", None), ("engine + receipt grammar", grammar),
                     ("engine, free (no grammar), not pinned", None), ("engine + receipt grammar", grammar)):
        engine = MllamaStaticEngine(model, max_batch=batch)
        first_s, _ = timed(lambda e=engine, g=g: e.generate(**x, max_new_tokens=new, grammar=g))
        total_s, out = timed(lambda e=engine, g=g: e.generate(**x, max_new_tokens=new, grammar=g))
        st = dict(engine.stats)
        ok, mean_len = _parse_rate(tokenizer, out)
        steps = max(st["decode_steps"], 1)
        rec.run({"way": label, "batch": batch, "max_new": new, "receipts_per_s": batch / total_s,
                 "total_s": total_s, "first_call_s": first_s, "decode_steps": st["decode_steps"],
                 "decode_ms_per_step": 1000 * st["decode_s"] / steps,
                 "prefill_ms_per_receipt": 1000 * st["prefill_s"] / batch,
                 "grammar_host_ms_per_step": 1000 * st.get("grammar_host_s", 0.0) / steps,
                 "grammar_wait_ms_per_step": 1000 * st.get("grammar_wait_s", 0.0) / steps,
                 "mean_new_tokens": mean_len, "receipts": batch, "ok": ok, "gpu": torch.cuda.get_device_name(0),
                 "cuda_graph": st.get("cuda_graph"), "graph_error": st.get("graph_error")})
        engine.release()
        del engine
        torch.cuda.empty_cache()


def section_refill(rec, model, args):
    import random

    from extractor.engine import MllamaStaticEngine

    n, slots, longest = args.refill_receipts, 32, 300
    rng = random.Random(11)
    lengths = [rng.randint(80, longest) for _ in range(n)]
    x = make_inputs(n, args.prompt, "cuda", seed=5)
    variants = (("engine, static batches", dict(refill=False)),
                ("engine, continuous refill (rows join 4+ at a time, the default)", {}),
                ("engine, continuous refill (rows join 8+ at a time)", dict(refill_min_rows=8)),
                ("engine, continuous refill (rows join one by one)", dict(refill_min_rows=1)),
                ("engine, refill + prefill overlapped", dict(overlap_prefill=True)),
                ("engine, refill + prefill overlapped, decode prioritised", dict(overlap_prefill=True,
                                                                                 decode_priority=True)),
                ("engine, refill one by one + prefill overlapped", dict(refill_min_rows=1, overlap_prefill=True)))
    variants = [v for v in variants if not args.refill_variants or v[0] in args.refill_variants.split(";")]
    for label, kw in variants:
        engine = MllamaStaticEngine(model, max_batch=slots, **kw)
        first_s, _ = timed(lambda e=engine: e.generate(**x, max_new_tokens=longest, lengths=lengths))
        total_s, out = timed(lambda e=engine: e.generate(**x, max_new_tokens=longest, lengths=lengths))
        st = dict(engine.stats)
        made = [int((row != engine.pad_id).sum()) for row in out]  # may undercount: random weights can write the pad id
        rec.run({"way": label, "batch": slots, "receipts": n, "receipts_per_s": n / total_s, "total_s": total_s,
                 "first_call_s": first_s, "decode_steps": st["decode_steps"],
                 "decode_ms_per_step": 1000 * st["decode_s"] / max(st["decode_steps"], 1),
                 "prefill_ms_per_receipt": 1000 * st["prefill_s"] / n, "refilled_rows": st.get("refilled_rows", 0),
                 "mean_new_tokens": sum(lengths) / n, "lengths_as_asked": made == lengths,
                 "gpu": torch.cuda.get_device_name(0), "cuda_graph": st.get("cuda_graph")})
        engine.release()
        del engine
        torch.cuda.empty_cache()


def _graph_us(fn):
    """Microseconds per call of ``fn`` replayed from a CUDA graph (``gpu_decode_kernels.graph_us``)."""
    from gpu_decode_kernels import graph_us

    return graph_us(fn)


@torch.inference_mode()
def _crosskv_kernel_rows(rec, args):
    """One decode cross-attention call at batch 32 (4 tiles: 6,404 keys): bf16 SDPA against the
    float8 kernel (engine/fp8_attention.py) at several tilings; its error against the
    dequantized float32 reference and against exact bf16 attention."""
    import torch.nn.functional as F

    from extractor.engine import fp8_attention as fx

    b, h, r, s, d = 32, 8, 4, 6404, 128
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(b, h, r, d, device="cuda", dtype=torch.bfloat16, generator=g) * 3
    k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    k8, ks = fx.quantize(k)
    v8, vs = fx.quantize(v)
    scale = d ** -0.5
    ref = fx.reference(q, k8, ks, v8, vs, None, scale).float()
    exact = F.scaled_dot_product_attention(q, k, v, scale=scale).float()
    bf16_bytes, fp8_bytes = 2 * k.numel() * 2, 2 * k.numel()
    us = _graph_us(lambda: F.scaled_dot_product_attention(q, k, v, scale=scale))
    rec.run({"way": "cross-attention bf16 SDPA", "batch": b, "keys": s, "us": round(us, 1),
             "tb_s": round(bf16_bytes / us / 1e6, 3)})
    # the default (splits_for, 128-key blocks, 4 warps, 3 stages) and its neighbours; the first run's
    # 25 tilings (splits 2/4/8, 64/128 keys, 4/8 warps, 2/3 stages) are in gpu_crosskv_2026-12-07_h100_run1.json
    tilings = [(None, 128, 4, 3), (1, 128, 4, 3), (4, 128, 4, 3), (2, 128, 4, 4), (2, 64, 4, 4), (2, 128, 2, 3)]
    for split, bn, warps, stages in tilings:
        try:
            call = functools.partial(fx.attention, q, k8, ks, v8, vs, None, scale, split=split, block_n=bn,
                                     warps=warps, stages=stages)
            out = call().float()
            us = _graph_us(call)
            rec.run({"way": "cross-attention fp8 kernel", "batch": b, "keys": s, "split": split or "auto",
                     "block_n": bn, "warps": warps, "stages": stages, "us": round(us, 1),
                     "tb_s": round(fp8_bytes / us / 1e6, 3), "rel_vs_reference": _rel(out, ref),
                     "rel_vs_exact_bf16": _rel(out, exact)})
        except Exception:
            rec.error(f"crosskv kernel {split} {bn} {warps} {stages}")


@torch.inference_mode()
def _selfkv_kernel_rows(rec):
    """One decode self-attention call at batch 32 over a 704-slot cache (a 400-token prompt, 256
    new tokens, the ring's slack), the last 200 slots masked (-inf, as before they are written):
    bf16 SDPA with the additive mask against the float8 kernel with per-token scales; and one
    step's key/value write (two ``index_copy_`` against ``write_token``), checked byte for byte
    against the torch reference."""
    import torch.nn.functional as F

    from extractor.engine import fp8_attention as fx

    b, h, r, s, d = 32, 8, 4, 704, 128
    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(b, h, r, d, device="cuda", dtype=torch.bfloat16, generator=g) * 3
    k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    mask = torch.zeros(b, 1, 1, s, device="cuda", dtype=torch.bfloat16)
    mask[..., 504:] = float("-inf")
    k8, ks = fx.quantize_tokens(k)
    v8, vs = fx.quantize_tokens(v)
    scale = d ** -0.5
    ref = fx.reference(q, k8, ks, v8, vs, mask, scale).float()
    exact = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).float()
    us = _graph_us(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale))
    rec.run({"way": "self-attention bf16 SDPA, additive mask", "batch": b, "slots": s, "us": round(us, 1),
             "tb_s": round(2 * k.numel() * 2 / us / 1e6, 3)})
    for split, bn in ((None, 128), (2, 128), (1, 64), (2, 64)):
        call = functools.partial(fx.attention, q, k8, ks, v8, vs, mask, scale, split=split, block_n=bn)
        out = call().float()
        us = _graph_us(call)
        rec.run({"way": "self-attention fp8 kernel, per-token scales", "batch": b, "slots": s,
                 "split": split or "auto", "block_n": bn, "us": round(us, 1),
                 "tb_s": round((2 * k.numel() + 2 * ks.numel() * 4) / us / 1e6, 3),
                 "rel_vs_reference": _rel(out, ref), "rel_vs_exact_bf16": _rel(out, exact)})
    kk, vv = (torch.randn(b, h, 1, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    cur = torch.tensor([300], device="cuda")
    us = _graph_us(lambda: (k.index_copy_(2, cur, kk), v.index_copy_(2, cur, vv)))
    rec.run({"way": "step key/value write, bf16 index_copy_ x2", "batch": b, "us": round(us, 1)})
    caches = [[torch.zeros_like(k8), torch.zeros_like(v8), torch.zeros_like(ks), torch.zeros_like(vs)] for _ in (0, 1)]
    us = _graph_us(lambda: fx.write_token(kk, vv, *caches[0], cur))
    fx.write_token_reference(kk, vv, *caches[1], cur)
    same = all(torch.equal(a.view(torch.uint8) if a.element_size() == 1 else a,
                           c.view(torch.uint8) if c.element_size() == 1 else c)
               for a, c in zip(caches[0], caches[1], strict=True))
    rec.run({"way": "step key/value write, fp8 write_token", "batch": b, "us": round(us, 1),
             "equal_to_reference": same})


def _fp8kv_logits_rows(rec, model):
    """First decoded step, 8 left-padded rows, with the cross-attention gates opened (at 0 the
    image cannot change the logits): float8 against bf16 keys/values (the image's, the cache's,
    both), and bf16 against itself at another batch size (the noise floor of the comparison)."""
    from extractor.testing.tiny_models import open_cross_attention_gates

    saved = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("_gate")}
    open_cross_attention_gates(model, attn=0.9, mlp=-0.7)
    try:
        x = make_inputs(8, 400, "cuda", seed=7)
        _, bf16 = _first_step_logits(model, x)
        _, b4 = _first_step_logits(model, {k: v[:4] for k, v in x.items()})
        for name, kw in (("cross", {"cross_kv": "fp8"}), ("self", {"self_kv": "fp8"}),
                         ("cross+self", {"cross_kv": "fp8", "self_kv": "fp8"})):
            _, fp8 = _first_step_logits(model, x, **kw)
            key = f"kv_fp8_{name}_vs_bf16_first_decode_step_gates_open"
            rec.put(key, {"rows": 8, "rel_diff": _rel(fp8, bf16),
                          "argmax_equal_rows": int((fp8.argmax(-1) == bf16.argmax(-1)).sum()),
                          "bf16_b4_vs_b8_rel_diff": _rel(b4, bf16[:4])})
            print(key, json.dumps(rec.data[key]), flush=True)
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])


CROSSKV_WAYS = {"bf16": {}, "cross fp8": {"cross_kv": "fp8"},
                "fp8 weight-only": {"fp8": "weight-only"},
                "fp8 weight-only, cross fp8": {"fp8": "weight-only", "cross_kv": "fp8"},
                "fp8 weight-only+text-prefill, cross fp8": {"fp8": "weight-only", "fp8_prefill": "text",
                                                            "cross_kv": "fp8"}}
FP8KV_WAYS = {"bf16": {}, "cross fp8": {"cross_kv": "fp8"}, "self fp8": {"self_kv": "fp8"},
              "cross+self fp8": {"cross_kv": "fp8", "self_kv": "fp8"},
              "fp8 weight-only, cross fp8": {"fp8": "weight-only", "cross_kv": "fp8"},
              "fp8 weight-only, cross+self fp8": {"fp8": "weight-only", "cross_kv": "fp8", "self_kv": "fp8"},
              "fp8 weight-only+text-prefill, cross+self fp8": {"fp8": "weight-only", "fp8_prefill": "text",
                                                               "cross_kv": "fp8", "self_kv": "fp8"}}


def _engine_rows(rec, model, args, ways):
    for batch in [int(b) for b in args.engine_batches.split(",")]:
        for label, kw in ways.items():
            try:
                engine, _ = run_engine(rec, model, batch, args, label=f"engine {label}", **kw)
                if engine._graph is not None:
                    rec.run({"way": f"engine {label}", "batch": batch,
                             "graph_replay_ms": round(time_graph_replay(engine), 2)})
                engine.release()
                del engine
            except Exception:
                rec.error(f"{label} batch {batch}")
            torch.cuda.empty_cache()


def section_fp8kv(rec, model, args):
    """Float8 keys/values, the image's and the self-attention cache's: the kernels alone, the
    logits, then the engine."""
    for fn in (_selfkv_kernel_rows, lambda r: _crosskv_kernel_rows(r, args), lambda r: _fp8kv_logits_rows(r, model)):
        try:
            fn(rec)
        except Exception:
            rec.error("fp8kv kernels or logits")
        torch.cuda.empty_cache()
    _engine_rows(rec, model, args, FP8KV_WAYS)


def section_crosskv(rec, model, args):
    """Float8 cross-attention keys/values (the 2026-12-07 runs): the kernel alone, the logits, then the engine."""
    _crosskv_kernel_rows(rec, args)
    torch.cuda.empty_cache()
    try:
        _fp8kv_logits_rows(rec, model)
    except Exception:
        rec.error("crosskv logits")
    _engine_rows(rec, model, args, CROSSKV_WAYS)


def _first_step_logits(model, x, **kwargs):
    from extractor.engine import MllamaStaticEngine

    engine = MllamaStaticEngine(model, use_cuda_graphs=False, max_batch=x["input_ids"].shape[0], **kwargs)
    recorded = engine.record_step_logits()
    tokens = engine.generate(**x, max_new_tokens=16, min_new_tokens=16)
    engine.release()
    return tokens, recorded[0].float().cpu()


FP8_WAYS = {  # --fp8-ways: label -> engine kwargs
    "bf16": {},
    "rowwise": {"fp8": "rowwise"},
    "weight-only": {"fp8": "weight-only"},
    "weight-only+prefill": {"fp8": "weight-only", "fp8_prefill": True},
    "rowwise+prefill": {"fp8": "rowwise", "fp8_prefill": True},
    "weight-only+text-prefill": {"fp8": "weight-only", "fp8_prefill": "text"},
}


def _fp8_logits_rows(rec, model, args, ways):
    x = make_inputs(8, args.prompt, "cuda", seed=7)
    bf16_tokens, bf16 = _first_step_logits(model, x)
    for way in ways:
        if way == "bf16":
            continue
        fp8_tokens, fp8 = _first_step_logits(model, x, **FP8_WAYS[way])
        same = (bf16_tokens == fp8_tokens).long().cumprod(-1).sum(-1)
        key = f"fp8_{way}_vs_bf16_first_decode_step"
        rec.put(key, {
            "rows": 8, "rel_diff": float((fp8 - bf16).norm() / bf16.norm()),
            "max_abs_diff": float((fp8 - bf16).abs().max()),
            "argmax_equal_rows": int((fp8.argmax(-1) == bf16.argmax(-1)).sum()),
            "tokens_equal_steps_per_row": [int(v) for v in same]})
        print(json.dumps(rec.data[key]), flush=True)
    # the noise floor of the comparison: bf16 against itself with the rows in another batch size
    other_tokens, other = _first_step_logits(model, {k: v[:4] for k, v in x.items()})
    rec.put("bf16_b4_vs_b8_first_decode_step_rel_diff", float((other - bf16[:4]).norm() / bf16[:4].norm()))


def section_fp8(rec, model, args):
    ways = args.fp8_ways.split(",")
    _fp8_logits_rows(rec, model, args, ways)
    for batch in [int(b) for b in args.engine_batches.split(",")]:
        for way in ways:
            label = "engine bf16" if way == "bf16" else f"engine fp8 {way}"
            try:
                engine, _ = run_engine(rec, model, batch, args, label=label, **FP8_WAYS[way])
                if engine._graph is not None:
                    rec.run({"way": label, "batch": batch, "graph_replay_ms": round(time_graph_replay(engine), 2)})
                engine.release()
                del engine
            except Exception:
                rec.error(f"{label} batch {batch}")
            torch.cuda.empty_cache()


@contextlib.contextmanager
def _text_linears_patched(model, make_forward):
    """Every ``nn.Linear`` of the text layers runs ``make_forward(module)`` inside the block
    (the engine's decode reads the weights directly: only the prefill sees the patch)."""
    mods = [m for m in model.model.language_model.layers.modules() if isinstance(m, torch.nn.Linear)]
    for m in mods:
        m.forward = make_forward(m)
    try:
        yield
    finally:
        for m in mods:
            del m.forward


def _noisy(eps, gen):
    def make(m):
        def forward(x):
            out = torch.nn.functional.linear(x, m.weight, m.bias)
            noise = torch.randn(out.shape, device=out.device, dtype=torch.float32, generator=gen)
            return (out.float() * (1 + eps * noise)).to(out.dtype)
        return forward
    return make


def _dequantized_fp8_linear(x, weight, bias, quant):
    """What ``fp8_prefill.fp8_linear`` computes, from the same quantized operands in float32."""
    xq, xs = quant(x)
    w = weight.q.to(torch.float32) * weight.scale.reshape(-1, 1)
    out = (xq.to(torch.float32) * xs) @ w.t()
    out = out if bias is None else out + bias.float()
    return out.to(x.dtype).reshape(*x.shape[:-1], -1)


def section_fp8check(rec, model, args):
    """Is the FP8 prefill's distance from bf16 the random model amplifying rounding, or a
    wrong product? Each way's first decoded step against the same engine with a bf16 prefill
    (FP8 weight-only decode on both sides): the FP8 text prefill; its float32 dequantized
    reference (same quantized operands: a wrong weight or scale would show here); and the
    bf16 prefill with seeded relative noise of 0.4 % (bf16's rounding) and 3.7 % (FP8's, the
    ``rel_err`` of bench/fp8_prefill_gemms.py) on every text GEMM's output."""
    from extractor.engine import fp8_prefill

    x = make_inputs(8, args.prompt, "cuda", seed=7)
    _, base = _first_step_logits(model, x, fp8="weight-only")
    got = {}
    _, got["fp8 text prefill"] = _first_step_logits(model, x, fp8="weight-only", fp8_prefill="text")
    real = fp8_prefill.fp8_linear
    fp8_prefill.fp8_linear = _dequantized_fp8_linear
    try:
        _, got["fp8 text prefill, float32 dequantized reference"] = _first_step_logits(
            model, x, fp8="weight-only", fp8_prefill="text")
    finally:
        fp8_prefill.fp8_linear = real
    for eps in (0.004, 0.037):
        gen = torch.Generator(device=x["input_ids"].device).manual_seed(0)
        with _text_linears_patched(model, _noisy(eps, gen)):
            _, got[f"bf16 prefill, {eps:.1%} noise per text GEMM"] = _first_step_logits(model, x, fp8="weight-only")
    pairs = [(name, base, v) for name, v in got.items()]
    pairs.append(("fp8 text prefill vs its dequantized reference", got["fp8 text prefill, float32 dequantized "
                  "reference"], got["fp8 text prefill"]))
    for name, ref, v in pairs:
        row = {"check": name, "rel_diff": float((v - ref).norm() / ref.norm()),
               "argmax_equal_rows": int((v.argmax(-1) == ref.argmax(-1)).sum())}
        rec.put(f"fp8check {name}", row)
        print(json.dumps(row), flush=True)


def section_quant(rec, args):
    from transformers import BitsAndBytesConfig

    ckpt = "/dev/shm/m11"
    if not os.path.exists(ckpt):
        model = build_model()
        t, _ = timed(lambda: model.save_pretrained(ckpt, max_shard_size="20GB"))
        print(f"saved checkpoint in {t:.1f}s", flush=True)
        del model
        torch.cuda.empty_cache()
    for mode in args.quant_modes.split(","):
        try:
            q = (BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=SKIP_MODULES) if mode == "int8" else
                 BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=SKIP_MODULES))
            t0 = time.perf_counter()
            model = MllamaForConditionalGeneration.from_pretrained(ckpt, quantization_config=q, device_map="cuda:0",
                                                                   torch_dtype=torch.bfloat16).eval()
            vision_quantised = any("Linear8bitLt" in type(m).__name__ or "Linear4bit" in type(m).__name__
                                   for m in model.model.vision_model.modules())
            rec.run({"way": f"load {mode}", "load_s": time.perf_counter() - t0,
                     "weights_gib": torch.cuda.memory_allocated() / 2**30,
                     "vision_tower_quantised": vision_quantised})
            with torch.inference_mode():
                model.generate(**make_inputs(1, 64, "cuda"), max_new_tokens=4, do_sample=False)
            for batch in [int(b) for b in args.quant_batches.split(",")]:
                run_generate(rec, model, batch, args, label=f"generate {mode}", new=args.quant_new)
            del model
        except Exception:
            rec.error(f"quant {mode}")
        torch.cuda.empty_cache()


def print_table(rec):
    print("\n| way | batch | receipts/s | prefill ms/receipt | decode ms/step | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rec.data["runs"]:
        if "receipts_per_s" in r:
            print(f"| {r['way']} | {r['batch']} | {r['receipts_per_s']:.3f} | "
                  f"{r.get('prefill_ms_per_receipt', float('nan')):.1f} | "
                  f"{r.get('decode_ms_per_step', float('nan')):.2f} | {r.get('peak_gib', float('nan')):.1f} |")
        elif "graph_replay_ms" in r:
            print(f"| {r['way']} | {r['batch']} | replay {r['graph_replay_ms']} ms | "
                  f"floor {r.get('floor_ms_at_copy_bw', '')} ms | {r.get('achieved_tb_s', '')} TB/s | |")
    if rec.data["errors"]:
        print("errors in:", [e["where"] for e in rec.data["errors"]])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="env,check,engine,variants,profile,generate,seed")
    ap.add_argument("--prompt", type=int, default=400)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--engine-batches", default="32,8,64,128")
    ap.add_argument("--gen-batches", default="8,32")
    ap.add_argument("--seed-receipts", type=int, default=1)
    ap.add_argument("--check-steps", type=int, default=64)
    ap.add_argument("--variants", default="nocompile,cudnn,prefill16,unfused,eager")
    ap.add_argument("--quant-modes", default="int8,nf4")
    ap.add_argument("--quant-batches", default="8")
    ap.add_argument("--quant-new", type=int, default=64)
    ap.add_argument("--refill-receipts", type=int, default=96)
    ap.add_argument("--overlap-receipts", type=int, default=128)
    ap.add_argument("--refill-variants", default="", help="';'-separated labels of the refill section (all if empty)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--fp8-ways", default="bf16,rowwise,weight-only",
                    help=f"fp8 section, comma-separated: {','.join(FP8_WAYS)} (+prefill: engine/fp8_prefill.py)")
    ap.add_argument("--fp8-tuned", help="a bench/fp8_gemm_sweep.py result: its best tilings for fp8_gemm")
    args = ap.parse_args()
    if args.fp8_tuned:
        from extractor.engine import fp8_gemm

        fp8_gemm.load_tuned(args.fp8_tuned)
    sections = args.sections.split(",")
    rec = Recorder(args.out)
    rec.put("args", vars(args))
    env = section_env(rec) if "env" in sections else {}
    model = None
    if set(sections) & {"check", "engine", "variants", "profile", "tiles2", "generate", "seed", "grammar", "fp8",
                        "fp8check", "refill", "prefill", "overlap", "crosskv", "fp8kv"}:
        t, model = timed(build_model)
        rec.put("model", {"build_s": round(t, 1), "params_b": sum(p.numel() for p in model.parameters()) / 1e9,
                          "weights_gib": torch.cuda.memory_allocated() / 2**30})
    steps = [("check", lambda: section_check(rec, model, args)),
             ("prefill", lambda: section_prefill(rec, model, args)),
             ("engine", lambda: section_engine(rec, model, args, env)),
             ("overlap", lambda: section_overlap(rec, model, args)),
             ("attention", lambda: section_attention(rec, model, args)),
             ("variants", lambda: section_variants(rec, model, args)),
             ("profile", lambda: section_profile(rec, model, args)),
             ("tiles2", lambda: section_tiles2(rec, model, args)),
             ("generate", lambda: section_generate(rec, model, args)),
             ("seed", lambda: section_seed(rec, model, args)),
             ("grammar", lambda: section_grammar(rec, model, args)),
             ("fp8", lambda: section_fp8(rec, model, args)),
             ("fp8check", lambda: section_fp8check(rec, model, args)),
             ("crosskv", lambda: section_crosskv(rec, model, args)),
             ("fp8kv", lambda: section_fp8kv(rec, model, args)),
             ("refill", lambda: section_refill(rec, model, args))]
    for name, fn in steps:
        if name in sections:
            t0 = time.perf_counter()
            try:
                fn()
            except Exception:
                rec.error(name)
            print(f"-- section {name}: {time.perf_counter() - t0:.1f}s", flush=True)
            torch.cuda.empty_cache()
    if "fp32check" in sections:
        import gc

        model = None  # the fp32 copy needs the room
        gc.collect()
        torch.cuda.empty_cache()
        try:
            section_fp32check(rec, args)
        except Exception:
            rec.error("fp32check")
    if "quant" in sections:
        if model is not None:
            import gc

            del model
            gc.collect()
            torch.cuda.empty_cache()
        section_quant(rec, args)
    print_table(rec)


if __name__ == "__main__":
    main()
