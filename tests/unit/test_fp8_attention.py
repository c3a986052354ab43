"""The float8 attention kernels (engine/fp8_attention.py) on the CPU, under Triton's
interpreter: the same kernel source the GPU compiles, run op by op, against the float32
reference over the dequantized keys and values. The interpreter must be chosen before Triton
is imported, so those checks run in a child process (this file run as a script). On the GPU the
compiled kernel is checked against the same reference at the 11B shape by
bench/gpu_throughput.py (section ``crosskv``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from extractor.engine import fp8_attention as fx  # noqa: E402

MIN = torch.finfo(torch.float32).min


def _inputs(b=2, h=2, r=4, s=300, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, r, d, generator=g)
    k = torch.randn(b, h, s, d, generator=g) * torch.linspace(0.2, 3.0, h)[None, :, None, None]
    v = torch.randn(b, h, s, d, generator=g)
    return q, k, v


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _kernel_checks() -> dict:
    """Run in the child process, under the interpreter: each case's errors against the
    dequantized reference and against exact attention."""
    q, k, v = _inputs()
    k8, ks = fx.quantize(k)
    v8, vs = fx.quantize(v)
    masked = torch.zeros(2, 1, 1, 300)
    masked[0, ..., 200:] = MIN  # row 0 sees its first 200 keys (a padding tile, as HF masks it)
    out = {}
    for name, bias in (("open", None), ("masked", masked)):
        want = fx.reference(q, k8, ks, v8, vs, bias, 32 ** -0.5)
        exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=32 ** -0.5)
        for split in (1, 2, 3, 8):
            got = fx.attention(q, k8, ks, v8, vs, bias, 32 ** -0.5, split=split, block_n=32)
            out[f"{name}/{split}"] = {"shape_ok": got.shape == want.shape and got.dtype == q.dtype,
                                      "vs_reference": _rel(got, want), "vs_exact": _rel(got, exact)}
    q, k, v = _inputs(b=1, r=2, s=100)  # every key masked: SDPA attends uniformly, so must the kernel
    k8, ks = fx.quantize(k)
    v8, vs = fx.quantize(v)
    got = fx.attention(q, k8, ks, v8, vs, torch.full((1, 1, 1, 100), MIN), 32 ** -0.5, split=2, block_n=32)
    mean = fx.dequantize(v8, vs, torch.float32).mean(dim=2, keepdim=True).expand_as(got)
    out["all_masked"] = {"finite": bool(torch.isfinite(got).all()), "vs_mean": _rel(got, mean)}
    out.update(_self_attention_checks())
    out["engine"] = _engine_checks()
    return out


def _carries(kernel_q, ref_q):
    """Where the interpreter's float8 rounding failed to carry into the exponent (a float8 power
    of two in the reference that the kernel's byte lies below; see ``_self_attention_checks``)."""
    r = ref_q.float().abs()
    return (r > 0) & (torch.log2(r.clamp(min=1e-30)) % 1 == 0) & (kernel_q.float().abs() < r)


def _engine_checks() -> dict:
    """The engine on the tiny Mllama with the Triton kernels (interpreted) where the GPU runs
    them, against the same engine with the references: the kernels' wiring in a decode step
    (the step's key and value as strided views, the additive masks, the ring slot, per-token
    and per-head scales) gives the references' logits and tokens. Each step's write kernel is
    compared with the reference write on the same inputs and then given the reference's values,
    so the interpreter's rounding slip (not the GPU's) does not spread through the cache."""
    from extractor.engine import MllamaStaticEngine
    from tests.unit.test_engine import _batch, build_tiny_mllama

    model, kernel_write = build_tiny_mllama(), fx.write_token
    batch = _batch(lengths=[6, 9, 7, 8], tiles=[2, 2, 1, 1], seed=3)
    writes = {"calls": 0, "differ": 0, "carries": 0}

    def checked_write(k, v, k8, v8, ks, vs, cur):
        ref = [t.clone() for t in (k8, v8, ks, vs)]
        fx.write_token_reference(k, v, *ref, cur)
        kernel_write(k, v, k8, v8, ks, vs, cur)
        for got, want in ((k8, ref[0]), (v8, ref[1])):
            carry = _carries(got, want)
            writes["differ"] += int(((got.float() != want.float()) & ~carry).sum())
            writes["carries"] += int(carry.sum())
        writes["differ"] += int((ks != ref[2]).sum() + (vs != ref[3]).sum())
        writes["calls"] += 1
        for dst, src in zip((k8, v8, ks, vs), ref, strict=True):
            dst.copy_(src)

    runs = {}
    for kernels in (False, True):
        fx.available = lambda device, kernels=kernels: kernels  # what the engine asks when it builds its state
        fx.write_token = checked_write
        engine = MllamaStaticEngine(model, cross_kv="fp8", self_kv="fp8", trim_cross_tiles=False)
        logits = engine.record_step_logits()
        tokens = engine.generate(**batch, max_new_tokens=6)
        runs[kernels] = (tokens, torch.stack(logits), [engine._state.fp8_attn.__name__,
                                                       engine._state.fp8_write.__name__])
    return {"tokens_equal": bool(torch.equal(runs[True][0], runs[False][0])),
            "logits_rel": _rel(runs[True][1], runs[False][1]), "ran": [runs[True][2], runs[False][2]],
            "writes": writes}


def _self_attention_checks() -> dict:
    """The self-attention cache's layout: a scale per token, -inf on the slots a row may not see
    (left padding, slots not written yet), and a step's key/value written at slot ``cur``."""
    q, k, v = _inputs(b=3, r=4, s=200, seed=1)
    k8, ks = fx.quantize_tokens(k)
    v8, vs = fx.quantize_tokens(v * torch.linspace(0.01, 10.0, 200)[:, None])  # scales over three decades
    mask = torch.zeros(3, 1, 1, 200)
    mask[0, ..., :37] = float("-inf")  # left padding
    mask[1, ..., 150:] = float("-inf")  # slots not reached yet
    mask[2, ..., 64:128] = float("-inf")
    v_real = v * torch.linspace(0.01, 10.0, 200)[:, None]
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v_real, attn_mask=mask, scale=32 ** -0.5)
    want = fx.reference(q, k8, ks, v8, vs, mask, 32 ** -0.5)
    out = {}
    for split in (1, 2):
        got = fx.attention(q, k8, ks, v8, vs, mask, 32 ** -0.5, split=split, block_n=32)
        out[f"self/{split}"] = {"shape_ok": got.shape == want.shape, "vs_reference": _rel(got, want),
                                "vs_exact": _rel(got, exact)}
    qkv = torch.randn(3, 1, 3 * 2 * 32, generator=torch.Generator().manual_seed(2))  # v: a strided view of it
    kk, vv = qkv[..., :64].reshape(3, 2, 1, 32), qkv[..., 128:].reshape(3, 2, 1, 32)
    caches = [[torch.zeros(3, 2, 200, 32, dtype=torch.float8_e4m3fn) for _ in range(2)]
              + [torch.zeros(3, 2, 200) for _ in range(2)] for _ in range(2)]
    cur = torch.tensor([117])
    fx.write_token(kk, vv, *caches[0], cur)
    fx.write_token_reference(kk, vv, *caches[1], cur)
    kernel, ref = ([fx.dequantize(c[i], c[i + 2], torch.float32) for i in (0, 1)] for c in caches)
    # Triton's interpreter (not the GPU) does not carry a rounding up into the exponent: 126.8 -> 64
    # where torch and the GPU's cvt give 128. Such elements (a float8 power of two that the input
    # lies below) are left out; every other one must dequantize to the reference's value.
    same = []
    for c_ref, c_kernel, (a, b) in ((caches[1][0], caches[0][0], (kernel[0], ref[0])),
                                    (caches[1][1], caches[0][1], (kernel[1], ref[1]))):
        carry = _carries(c_kernel, c_ref)
        same.append(bool(torch.equal(a[~carry], b[~carry])) and int(carry.sum()) < 0.05 * carry[:, :, 117].numel())
    out["write"] = {"same": all(same),
                    "only_slot": all(bool(t[:, :, torch.arange(200) != 117].eq(0).all()) for t in kernel),
                    "close_to_input": max(_rel(ref[0][:, :, 117], kk[:, :, 0]), _rel(ref[1][:, :, 117], vv[:, :, 0]))}
    return out


@pytest.fixture(scope="module")
def interpreted():
    here = Path(fx.__file__).parents
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(here[2]), str(here[3]), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_quantize_keeps_each_heads_range_and_rounds_within_fp8s_step():
    _, k, _ = _inputs()
    k8, scale = fx.quantize(k)
    assert k8.dtype == torch.float8_e4m3fn and scale.shape == k.shape[:2]
    assert torch.allclose(k8.float().abs().amax(dim=(-2, -1)), torch.full_like(scale, 448.0))
    back = fx.dequantize(k8, scale, torch.float32)
    floor = scale[..., None, None] * 2 ** -6  # e4m3's smallest normal, in the head's units
    rel = (back - k).abs() / k.abs().clamp(min=floor)
    assert float(rel.max()) <= 2 ** -4 * 1.01  # 3 mantissa bits: half a step is 1/16 at most


@pytest.mark.parametrize("case", [f"{m}/{s}" for m in ("open", "masked") for s in (1, 2, 3, 8)])
def test_kernel_equals_the_dequantized_reference(interpreted, case):
    got = interpreted[case]
    assert got["shape_ok"]
    assert got["vs_reference"] < 2e-3, got  # float16 queries and probabilities in the kernel: ~3e-4
    assert 0.005 < got["vs_exact"] < 0.08, got  # FP8's own rounding: there, and small


@pytest.mark.parametrize("split", [1, 2])
def test_per_token_scales_and_an_infinite_mask_as_the_self_attention_cache_has_them(interpreted, split):
    got = interpreted[f"self/{split}"]
    assert got["shape_ok"]
    assert got["vs_reference"] < 2e-3, got
    assert 0.002 < got["vs_exact"] < 0.08, got


def test_a_steps_key_and_value_are_quantized_into_their_slot_only(interpreted):
    got = interpreted["write"]
    assert got["same"] and got["only_slot"], got  # the kernel's bytes dequantize as the reference's
    assert got["close_to_input"] < 0.05, got  # and the reference's as the input, within FP8's rounding


def test_the_engine_with_the_kernels_gives_the_references_tokens(interpreted):
    got = interpreted["engine"]
    assert got["ran"] == [["attention", "checked_write"], ["reference", "write_token_reference"]]
    assert got["tokens_equal"], got
    assert got["logits_rel"] < 5e-3, got  # float16 queries and probabilities in the kernel
    writes = got["writes"]  # every step of every self-attention layer: the kernel wrote the reference's bytes
    assert writes["calls"] >= 5 * 2 and writes["differ"] == 0, writes
    assert writes["carries"] < 0.05 * writes["calls"] * 4 * 2 * 16 * 2, writes  # rows x heads x dims, k and v


def test_a_row_whose_every_key_is_masked_attends_uniformly_like_sdpa(interpreted):
    assert interpreted["all_masked"]["finite"]
    assert interpreted["all_masked"]["vs_mean"] < 1e-4


def test_splits_give_the_card_programs_without_tiny_splits():
    assert fx.splits_for(256, 6404) == 1  # batch 32 x 8 heads, 4 tiles: 256 programs on 132 SMs
    assert fx.splits_for(64, 6404) == 4  # batch 8
    assert fx.splits_for(8, 6404) == 8  # one row: 64 programs of 800 keys
    assert fx.splits_for(256, 704) == 1  # the self-attention cache at batch 32
    assert fx.splits_for(8, 300) == 1  # too few keys to split


if __name__ == "__main__":  # the child process of ``interpreted``
    torch.set_num_threads(1)
    print(json.dumps(_kernel_checks()))
