"""The ``hf`` backend end to end on tiny real models (Mllama and LLaVA), offline, on the CPU.

The models have random weights, so what they write is gibberish: the receipts come
back "failed" with the reason and the raw text, which is exactly the path a confused
real model takes. The "ok" path is checked on ``_postprocess`` with known model text.
These tests decode freely (``grammar: none``); the constrained default is
tests/unit/test_grammar.py's.
"""

from __future__ import annotations

import io
from decimal import Decimal

import pytest

from extractor.backends.hf import HFBackend, receipt_from_answers, shrink_for_processor
from extractor.errors import ConfigError, ParseError
from extractor.images import ReceiptInput
from tests.unit.hf_inputs import noise_image, noise_jpeg, tiny_spec

pytestmark = pytest.mark.filterwarnings("ignore")
KINDS = ("mllama", "llava")


def _spec(kind, **overrides):
    return tiny_spec(kind, **{"grammar": "none", **overrides})


@pytest.fixture(scope="module")
def backends(tiny_model_dirs):
    return {kind: HFBackend(_spec(kind), model_dir=tiny_model_dirs[kind]) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_random_model_gives_failed_results_with_reason_and_raw_text(backends, kind):
    backend = backends[kind]
    items = [ReceiptInput.from_bytes(noise_jpeg(i, (80 + 40 * i, 150)), f"s3://b/r{i}.jpg") for i in range(3)]
    results = backend.extract(items)
    assert [r.receipt_id for r in results] == [i.receipt_id for i in items]
    assert [r.source for r in results] == [i.source for i in items]
    for result in results:
        assert result.extractor_version == f"hf:tiny/{kind}@test:v1"
        # gibberish cannot be a receipt: a failure that says why and keeps what was said
        assert result.status == "failed" and result.receipt is None
        assert result.reason.startswith(("unparseable output", "invalid fields"))
        assert result.raw_text and result.raw_text.strip()
        assert result.timings["forward_s"] > 0
    assert len({r.raw_text for r in results}) > 1, "outputs should depend on the image"


def _tokens(backend, images, texts):
    import torch

    inputs = backend.batch_inputs(images, texts)
    with torch.inference_mode():
        return backend._generate(inputs, 10)


def _trim(row, pad_id, eos_ids):
    row = list(row)
    for i, tok in enumerate(row):
        if tok in eos_ids:
            return row[:i + 1]
    while row and row[-1] == pad_id:
        row.pop()
    return row


@pytest.mark.parametrize("kind", KINDS)
def test_batched_output_equals_one_at_a_time_token_exact(backends, kind):
    """Different image sizes (Mllama: 1 or 2 tiles) and different prompt lengths, so the
    batch really is left-padded; greedy decoding must give the same tokens either way."""
    backend = backends[kind]
    tok = backend.processor.tokenizer
    images = [noise_image(10 + i, size) for i, size in enumerate([(60, 150), (150, 60), (70, 70)])]
    questions = ["What is the total?", "Store name?", "What is the date printed on this receipt, please?"]
    from extractor import prompts

    texts = [backend.processor.apply_chat_template(prompts.build_messages(backend.spec, q),
                                                   add_generation_prompt=True) for q in questions]
    lengths = {len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts}
    assert len(lengths) == 3  # the batch needs padding
    batched = _tokens(backend, images, texts)
    eos = backend.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    pad = backend.generation_config.pad_token_id
    for i, (image, text) in enumerate(zip(images, texts, strict=False)):
        single = _tokens(backend, [image], [text])
        assert _trim(batched[i].tolist(), pad, eos_ids) == _trim(single[0].tolist(), pad, eos_ids)
    assert len({tuple(r) for r in batched.tolist()}) == 3


def test_inputs_are_left_padded(backends):
    backend = backends["mllama"]
    inputs = backend.batch_inputs([noise_image(1, (60, 60))] * 2, ["<|image|>a", "<|image|>a b c d e f"])
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert inputs["input_ids"][0, 0] == backend.processor.tokenizer.pad_token_id


@pytest.mark.parametrize("kind", KINDS)
def test_chat_template_output_gets_exactly_one_bos(backends, kind):
    """The template writes the BOS token; tokenizing it with special tokens would add a second."""
    backend = backends[kind]
    from extractor import prompts

    text = backend.processor.apply_chat_template(prompts.build_messages(backend.spec, "total?"),
                                                 add_generation_prompt=True)
    ids = backend.batch_inputs([noise_image(1, (60, 60))], [text])["input_ids"][0].tolist()
    assert ids.count(backend.processor.tokenizer.bos_token_id) == 1
    assert ids[0] == backend.processor.tokenizer.bos_token_id


def test_static_engine_seam_gives_the_same_tokens_as_generate(tiny_mllama_dir, backends):
    """spec.engine='static' routes ``_generate`` through the project's Mllama engine (it
    runs eagerly on the CPU); its tokens must equal ``model.generate``'s."""
    pytest.importorskip("extractor.engine.mllama")
    static = HFBackend(_spec("mllama", engine="static"), model_dir=tiny_mllama_dir)
    assert static.engine_name == "static" and backends["mllama"].engine_name == "generate"
    images = [noise_image(5, (60, 150)), noise_image(6, (90, 90))]
    texts = [static.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
        add_generation_prompt=True) for q in ("total?", "the store name?")]
    got = _tokens(static, images, texts)
    want = _tokens(backends["mllama"], images, texts)
    pad = static.generation_config.pad_token_id
    assert [_trim(r, pad, set()) for r in got.tolist()] == [_trim(r, pad, set()) for r in want.tolist()]


def test_engine_auto_on_cpu_and_for_other_architectures_is_generate(backends):
    assert backends["mllama"].engine_name == "generate"  # "auto" without CUDA
    assert backends["llava"].engine_name == "generate"


def test_cuda_oom_splits_the_batch_and_loses_nothing(backends, monkeypatch):
    """No GPU here: ``_generate`` raises the real ``torch.cuda.OutOfMemoryError`` for
    batches above 1 receipt, as a full card would; every receipt still gets its own text."""
    import torch

    backend = backends["mllama"]
    items = [ReceiptInput.from_bytes(noise_jpeg(20 + i), f"r{i}") for i in range(5)]
    expected = [r.raw_text for r in backend.extract(items)]
    real_generate = backend._generate
    sizes = []

    def small_card(model_inputs, max_new_tokens, **kwargs):
        sizes.append(model_inputs["input_ids"].shape[0])
        if model_inputs["input_ids"].shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(model_inputs, max_new_tokens, **kwargs)

    monkeypatch.setattr(backend, "_generate", small_card)
    results = backend.extract(items)
    assert [r.raw_text for r in results] == expected
    assert sizes[:3] == [4, 2, 1] and sizes.count(1) == 5


def test_bad_images_fail_with_reasons_while_the_rest_of_the_batch_is_read(backends):
    from PIL import Image

    good = noise_jpeg(1)
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 MP in ~10 kB
    one_px = io.BytesIO()
    Image.new("RGB", (1, 1)).save(one_px, "PNG")
    inputs = {
        "good-1": good, "empty": b"", "truncated": good[: len(good) // 2],
        "text": b"TOTAL 12.30\nthank you\n" * 10, "bomb": bomb.getvalue(), "tiny": one_px.getvalue(),
        "good-2": noise_jpeg(2),
    }
    items = [ReceiptInput.from_bytes(data, name) for name, data in inputs.items()]
    results = {r.source: r for r in backends["mllama"].extract(items)}
    assert list(results) == list(inputs)
    expected = {"empty": "empty file", "truncated": "truncated", "text": "unsupported format",
                "bomb": "decompression bomb", "tiny": "too small"}
    for name, words in expected.items():
        assert results[name].status == "failed"
        assert results[name].reason.startswith("bad image:") and words in results[name].reason, name
        assert results[name].raw_text is None
    for name in ("good-1", "good-2"):  # reached the model: its (gibberish) text is kept
        assert results[name].raw_text and not results[name].reason.startswith("bad image")


def test_large_images_are_shrunk_before_the_processor(backends):
    mllama, llava = backends["mllama"], backends["llava"]
    big = noise_image(0, (600, 2400))
    assert mllama.useful_size == ("long", 56 * 2)  # tile size x max tiles
    assert shrink_for_processor(big, mllama.useful_size).size == (28, 112)
    assert llava.useful_size == ("short", 2 * 28)
    assert shrink_for_processor(big, llava.useful_size).size == (56, 224)
    small = noise_image(0, (40, 50))
    assert shrink_for_processor(small, mllama.useful_size) is small


@pytest.mark.parametrize("text", [
    '```json\n{"store_name": "SANYU  STATIONERY", "date": "05/12/2017", "total": "RM 7.00",'
    ' "tax_amount": null, "currency": "RM", "line_items": [{"name": "Pen", "quantity": 2,'
    ' "unit_price": "3.50", "line_total": 7.00}]}\n```\nLet me know if you need more.',
    "Sure! {'store_name': 'SANYU STATIONERY', 'date': '2017-12-05', 'total': 7.0, 'tip': 'N/A',"
    " 'currency': 'MYR', 'line_items': [{'name': 'Pen', 'quantity': 2, 'unit_price': 3.5,"
    " 'line_total': 7}], 'payment_method': None,",
])
def test_postprocess_reads_model_json_into_a_receipt(backends, text):
    import datetime as dt

    receipt = backends["mllama"]._postprocess(text)
    assert receipt.store_name == "SANYU STATIONERY"
    assert receipt.date == dt.date(2017, 12, 5)
    assert receipt.total == Decimal("7.00") and isinstance(receipt.total, Decimal)
    assert receipt.currency == "MYR"
    assert receipt.tip is None and receipt.payment_method is None
    assert receipt.line_items[0].name == "Pen" and receipt.line_items[0].line_total == Decimal("7")


def test_postprocess_failures_are_typed_for_the_base_class(backends):
    backend = backends["mllama"]
    with pytest.raises(ParseError) as info:
        backend._postprocess("I cannot read this receipt.")
    assert info.value.raw_text == "I cannot read this receipt."
    with pytest.raises(ValueError, match="date"):
        backend._postprocess('{"date": "the fifth"}')


def test_fields_mode_asks_each_question_and_combines_the_answers(tiny_llava_dir):
    backend = HFBackend(_spec("llava", prompt_mode="fields", max_new_tokens=4), model_dir=tiny_llava_dir)
    assert set(backend.questions) == {"store_name", "date", "total"}
    result = backend.extract([ReceiptInput.from_bytes(noise_jpeg(3), "r")])[0]
    import json

    assert set(json.loads(result.raw_text)) == {"store_name", "date", "total"}
    receipt = receipt_from_answers({"store_name": "Answer: SANYU STATIONERY SHOP.",
                                    "date": "The date is 05/12/2017.", "total": "The total is RM 1,234.50",
                                    })
    assert (receipt.store_name, str(receipt.date), receipt.total) == (
        "SANYU STATIONERY SHOP", "2017-12-05", Decimal("1234.50"))
    assert receipt_from_answers({"total": "Not found", "date": "N/A"}).total is None
    with pytest.raises(ParseError):
        receipt_from_answers({"total": "no idea"})


def test_quantisation_needs_cuda(tiny_mllama_dir):
    with pytest.raises(ConfigError, match="CUDA"):
        HFBackend(_spec("mllama", quantization="8bit"), model_dir=tiny_mllama_dir)


def test_missing_model_dir_is_a_model_source_error(tmp_path):
    from extractor.errors import ModelSourceError

    with pytest.raises(ModelSourceError):
        HFBackend(_spec("mllama"), model_dir=tmp_path / "nothing-here")


def test_registry_loads_once_per_process(tiny_llava_dir):
    from extractor.backends import load_backend

    spec = _spec("llava", batch_size=2)
    first = load_backend(spec, model_dir=str(tiny_llava_dir))
    assert load_backend(spec, model_dir=str(tiny_llava_dir)) is first
    assert isinstance(first, HFBackend)


# --- quantisation: the module names kept out, checked on the real module trees ---------

def _linear_names(model):
    import torch

    return [name for name, module in model.named_modules() if type(module) is torch.nn.Linear]


def _converted(model, quant_config):
    """The linear layers transformers' bitsandbytes quantizer would replace, computed with
    its own code (``get_modules_to_not_convert`` + ``should_convert_module``). bitsandbytes
    itself is not installed here (no CUDA), so the replacement is not executed."""
    from transformers.quantizers.auto import AutoHfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    quantizer = AutoHfQuantizer.from_config(quant_config)
    keep = quantizer.get_modules_to_not_convert(model, quant_config.llm_int8_skip_modules,
                                                model._keep_in_fp32_modules)
    return {name for name in _linear_names(model) if should_convert_module(name, keep)}


@pytest.mark.parametrize("kind, expected", [
    ("mllama", ["model.vision_model", "model.multi_modal_projector", "lm_head"]),
    ("llava", ["model.vision_tower", "model.multi_modal_projector", "lm_head"]),
])
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantisation_keeps_vision_tower_projector_and_lm_head_out(tiny_model_dirs, kind, expected, bits):
    import torch
    from transformers import AutoModelForImageTextToText

    from extractor.quantization import bnb_config, skip_modules_for

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs[kind], local_files_only=True)
    skip = skip_modules_for(model)
    assert skip == expected
    modules = dict(model.named_modules())
    assert all(prefix in modules for prefix in skip)  # the prefixes exist in this tree
    config = bnb_config(bits, skip, torch.bfloat16)
    converted = _converted(model, config)
    linears = _linear_names(model)
    vision_and_projector = [n for n in linears if n.startswith(tuple(skip[:2]))]
    text = [n for n in linears if n.startswith("model.language_model.")]
    assert vision_and_projector and text
    assert not converted & set(vision_and_projector) and "lm_head" not in converted
    assert converted == set(text)  # every decoder linear is quantised, nothing else
    # the transformers-4.x short names would quantise the whole vision tower in 5.x
    short = bnb_config(bits, ["vision_model", "vision_tower", "multi_modal_projector", "lm_head"],
                       torch.bfloat16)
    assert set(vision_and_projector) & _converted(model, short)


def test_skip_modules_for_the_real_11b_architecture_on_the_meta_device():
    from transformers import MllamaConfig

    from extractor.quantization import skip_modules_for_config

    assert skip_modules_for_config(MllamaConfig()) == [
        "model.vision_model", "model.multi_modal_projector", "lm_head"]


def test_fp8_is_refused_on_a_card_without_float8_tensor_cores():
    from extractor.backends.hf import check_fp8_card

    check_fp8_card("NVIDIA H100 80GB HBM3", (9, 0))
    check_fp8_card("NVIDIA L4", (8, 9))
    with pytest.raises(ConfigError, match=r"float8 tensor cores.*NVIDIA A100-SXM4-80GB \(8\.0\)"):
        check_fp8_card("NVIDIA A100-SXM4-80GB", (8, 0))


def test_fp8_runs_in_the_static_engine_and_is_refused_where_it_would_not(tiny_mllama_dir):
    pytest.importorskip("extractor.engine.mllama")
    backend = HFBackend(_spec("mllama", quantization="fp8", engine="static"), model_dir=tiny_mllama_dir)
    assert backend.engine_name == "static" and backend.engine.fp8 == "weight-only"
    assert (backend.engine.cross_kv, backend.engine.self_kv) == ("fp8", "fp8")  # keys/values in float8 too
    assert backend.version.endswith("+fp8-weight-only-fp8-kv:v1")  # rows name the FP8 scheme that made them
    [result] = backend.extract([ReceiptInput.from_bytes(noise_jpeg(3), "r.jpg")])
    assert result.raw_text  # it decoded (gibberish: random weights, free decoding)
    with pytest.raises(ConfigError, match="static engine"):  # "auto" on a CPU means generate: no silent bf16
        HFBackend(_spec("mllama", quantization="fp8"), model_dir=tiny_mllama_dir)
