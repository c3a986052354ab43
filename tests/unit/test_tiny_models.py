"""The tiny models are real transformers models: saved, reloaded offline, image-sensitive."""

from __future__ import annotations

import json

import numpy as np
import pytest

from extractor.testing.tiny_models import KINDS, build_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore")


def _load(path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True).eval()
    return processor, model


def _inputs(processor, kind, images):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "total?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch_images = [[im] for im in images] if kind == "mllama" else images
    return processor(images=batch_images, text=[text] * len(images), padding=True,
                     add_special_tokens=False, return_tensors="pt")


def _image(seed, size=(80, 120)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("kind", KINDS)
def test_reloads_offline_with_auto_classes(tiny_model_dirs, kind):
    processor, model = _load(tiny_model_dirs[kind])
    expected = {"mllama": "MllamaForConditionalGeneration", "llava": "LlavaForConditionalGeneration"}
    assert type(model).__name__ == expected[kind]
    config = json.loads((tiny_model_dirs[kind] / "config.json").read_text())
    assert config["model_type"] == kind
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    # the chat template puts the architecture's image placeholder in the prompt
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert processor.image_token in prompt
    assert prompt.startswith(processor.tokenizer.bos_token)
    # a locally trained tokenizer: JSON and digits round-trip through it
    text = '{"total": "1,234.56", "date": "2017-12-05"}'
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.decode(ids) == text
    assert processor.tokenizer.padding_side == "left"


def test_mllama_cross_attention_gates_are_open(tiny_mllama_dir):
    _, model = _load(tiny_mllama_dir)
    gates = {n: p.item() for n, p in model.named_parameters() if "cross_attn_attn_gate" in n or
             "cross_attn_mlp_gate" in n}
    assert gates and all(v != 0.0 for v in gates.values())


@pytest.mark.parametrize("kind", KINDS)
def test_output_depends_on_the_image(tiny_model_dirs, kind):
    import torch

    processor, model = _load(tiny_model_dirs[kind])
    inputs = _inputs(processor, kind, [_image(1), _image(2)])
    with torch.inference_mode():
        logits = model(**inputs).logits[:, -1]
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


def test_same_seed_same_model_other_seed_other_model(tmp_path):
    from safetensors.torch import load_file

    a = build_tiny_model("llava", tmp_path / "a", seed=3)
    b = build_tiny_model("llava", tmp_path / "b", seed=3)
    c = build_tiny_model("llava", tmp_path / "c", seed=4)
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    assert any(not np.array_equal(wa[k].numpy(), wc[k].numpy()) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model kind"):
        build_tiny_model("gpt2", tmp_path)
