"""Tiny random-weight vision-language models for tests, demos and benchmarks of the plumbing.

No weights can be downloaded here (HF offline), yet the ``hf`` backend has to be
exercised end to end on real ``transformers`` classes. ``build_tiny_model`` builds one
from scratch in about a second: a few-layer model with random weights, a byte-level BPE
tokenizer *trained locally* on a small receipt-flavoured corpus, the architecture's real
processor and a chat template that places the image token, all saved with
``save_pretrained`` so it reloads with ``local_files_only=True`` exactly like a Hub
snapshot does.

The output of such a model is gibberish, by design; what the tests check is shapes,
padding, batching, decoding and error handling, which do not depend on trained weights.
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("mllama", "llava")

# Llama 3 special tokens (what the real Llama 3.2 Vision tokenizer carries, minus the
# reserved ones); <|image|> is the Mllama image placeholder.
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>",
                   "<|image|>"]
LLAVA_SPECIALS = ["<s>", "</s>", "<pad>", "<unk>", "<image>"]

# Llama 3.2 Vision's template, reduced to what the extractor sends: user/system/assistant
# turns whose content is a string or a list of {"type": "image"} / {"type": "text"} parts.
MLLAMA_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# LLaVA-1.5 style: "USER: <image>\n... ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- message['content'] if message['content'] is string "
    "else message['content'][0]['text'] }}{{- ' ' }}"
    "{%- else %}{{- message['role'].upper() + ': ' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<image>\\n' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- eos_token if message['role'] == 'assistant' else ' ' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'ASSISTANT:' }}{%- endif %}"
)

# A small corpus with what receipts and the extractor's prompts/answers contain: JSON
# punctuation, digits, money and date formats, common receipt words.
_CORPUS = [
    '{"store_name": "SANYU STATIONERY SHOP", "date": "2017-12-05", "total": "7.00"}',
    '{"store_address": "NO. 31G&33G, JALAN SETIA INDAH X ,U13/X 40170 SETIA ALAM",',
    '"line_items": [{"name": "Pencil", "quantity": 2, "unit_price": 1.50, "line_total": 3.00}]',
    "TOTAL RM 12.30 SUBTOTAL 11.60 GST 6% 0.70 CASH 20.00 CHANGE 7.70 ROUNDING 0.00",
    "Date: 05/12/2017 Time: 1:05 PM INVOICE NO 18281 TEL 03-3362 4137 Thank you!",
    "Receipt total amount paid tax tip discount currency USD EUR GBP MYR $ € £",
    "You are a receipt reader. Return only JSON with these keys, null when absent.",
    "What is the store name? What is the date? What is the total amount?",
    "0 1 2 3 4 5 6 7 8 9 10 25 99 100 1,234.56 1.234,56 2018-03-04 Dec 5, 2017 null true false",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ ,.;:!?'\"()[]{}<>/\\|-_+=*&%#@~`^",
]


def open_cross_attention_gates(model, attn: float = 1.0, mlp: float = 1.0) -> None:
    """A fresh Mllama has its cross-attention gates at zero (tanh(0) = 0), so the text model
    would ignore the image entirely; set them so outputs depend on the pixels."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("cross_attn_attn_gate"):
                param.fill_(attn)
            elif name.endswith("cross_attn_mlp_gate"):
                param.fill_(mlp)


def build_tiny_model(kind: str, out_dir, *, seed: int = 0) -> Path:
    """Build, save and return the folder of a tiny random ``kind`` model with its processor.

    ``kind`` is "mllama" (``MllamaForConditionalGeneration``, the default architecture)
    or "llava" (``LlavaForConditionalGeneration``). The same seed gives the same weights
    and tokenizer. Reload with ``AutoProcessor`` / ``AutoModelForImageTextToText``
    ``.from_pretrained(path, local_files_only=True)``.
    """
    import torch

    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {', '.join(KINDS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    builder = _build_mllama if kind == "mllama" else _build_llava
    devnull_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model, processor = builder()
    finally:
        torch.random.set_rng_state(devnull_state)  # don't disturb the caller's RNG
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _train_tokenizer(specials: list[str], *, bos: str, eos: str, pad: str, unk: str | None,
                     extra: dict[str, str] | None = None, vocab_size: int = 400):
    """A byte-level BPE trained on ``_CORPUS`` (deterministic), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token=unk, padding_side="left", **(extra or {}))


def _build_mllama():
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessorPil,
        MllamaProcessor,
    )

    tokenizer = _train_tokenizer(LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>",
                                 pad="<|finetune_right_pad_id|>", unk=None)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAMA3_SPECIALS}
    vision = dict(hidden_size=32, attention_heads=2, num_hidden_layers=2, num_global_layers=1,
                  intermediate_size=64, intermediate_layers_indices=[0], vision_output_dim=64,
                  image_size=56, patch_size=14, max_num_tiles=2,
                  supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])
    text = dict(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=128, cross_attention_layers=[1],
                max_position_embeddings=4096, initializer_range=0.05, bos_token_id=ids["<|begin_of_text|>"],
                eos_token_id=[ids["<|end_of_text|>"], ids["<|eot_id|>"]],
                pad_token_id=ids["<|finetune_right_pad_id|>"])
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=ids["<|image|>"])
    model = MllamaForConditionalGeneration(config).eval()
    open_cross_attention_gates(model)
    model.generation_config.pad_token_id = text["pad_token_id"]
    model.generation_config.eos_token_id = text["eos_token_id"]
    model.generation_config.bos_token_id = text["bos_token_id"]
    image_processor = MllamaImageProcessorPil(size={"height": 56, "width": 56}, max_image_tiles=2)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=MLLAMA_CHAT_TEMPLATE)
    return model, processor


def _build_llava():
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = _train_tokenizer(LLAVA_SPECIALS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAVA_SPECIALS}
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
                  projection_dim=32)
    text = dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=4096, initializer_range=0.05, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                pad_token_id=ids["<pad>"])
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["<image>"],
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.eos_token_id = ids["</s>"]
    model.generation_config.bos_token_id = ids["<s>"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28},
                                            crop_size={"height": 28, "width": 28})
    # 28/14 = 2x2 patches + CLS, and the "default" strategy drops CLS: 4 image tokens.
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    return model, processor
