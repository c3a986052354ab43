"""bitsandbytes 8-bit / 4-bit loading with the right modules kept out.

Quantising a vision tower or a multimodal projector ruins a VLM's reading of the
image for almost no memory saved (they are ~5% of Llama 3.2 11B Vision), and
``lm_head`` is kept in full precision as usual. In transformers 5.x the modules are
matched by *full* name from the top of the model, so the skip list must say
``model.vision_model``, not ``vision_model`` (the 4.x names): a stale short name
silently quantises the vision tower.

The names differ per architecture (Mllama ``model.vision_model``, LLaVA
``model.vision_tower``, Idefics3 ``model.vision_model`` + ``model.connector``), so they
are derived from the module tree: every child of the base model except the language
model, plus the output embeddings.

Speed note (docs/models.md): 8-bit decodes about 2.4x slower than bf16 on an H100,
4-bit (nf4) also slower; quantise only to fit a small card, never for throughput.
"""

from __future__ import annotations

from typing import Any

# Names of the text decoder inside a VLM's base model, across architectures.
_LANGUAGE_MODEL_NAMES = ("language_model", "text_model")


def skip_modules_for(model: Any) -> list[str]:
    """Full module-name prefixes to keep out of quantisation for ``model``.

    Works on a model built on the meta device (no memory), see ``skip_modules_for_config``.
    """
    base_prefix = getattr(model, "base_model_prefix", "model")
    base = getattr(model, base_prefix, None)
    if base is None or base is model:
        raise ValueError(f"{type(model).__name__}: cannot find the base model to inspect")
    skip = []
    for name, child in base.named_children():
        if name in _LANGUAGE_MODEL_NAMES:
            continue
        if any(True for _ in child.parameters()):
            skip.append(f"{base_prefix}.{name}")
    if not any(name in _LANGUAGE_MODEL_NAMES for name, _ in base.named_children()):
        raise ValueError(f"{type(model).__name__}: no language model among "
                         f"{[n for n, _ in base.named_children()]}")
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if output is not None and module is output:
            skip.append(name)
            break
    return skip


def skip_modules_for_config(config: Any) -> list[str]:
    """``skip_modules_for`` on a meta-device instance of ``config``'s architecture."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return skip_modules_for(model)


def bnb_config(quantization: str, skip_modules: list[str], compute_dtype: Any):
    """A ``BitsAndBytesConfig`` for "8bit" or "4bit" (nf4, double quantisation)."""
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules))
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype,
                                  llm_int8_skip_modules=list(skip_modules))
    raise ValueError(f"unknown quantization {quantization!r}")
