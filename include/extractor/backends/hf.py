"""The ``hf`` backend: any Hugging Face image-text-to-text model (Llama 3.2 Vision by default).

preprocess: bytes -> a decoded image, shrunk right away to the largest size the
processor can use (a 12 MP phone photo is not kept around for a 560 px tile canvas).
forward: the chat template with the image, ``add_special_tokens=False`` (the template
already starts with the BOS token), left padding, one greedy ``generate`` per batch
under ``inference_mode``, only the new tokens decoded. A CUDA out-of-memory error
splits the batch in halves and retries, so nothing is lost. postprocess: the model's
text -> JSON (``jsonrepair``) -> a validated ``Receipt`` whose ``confidence`` holds, per
field, the lowest probability among the tokens that spell its value (the rule and its
reasons: ``backends/token_confidence.py``; both decode ways score tokens alike).

Decisions:
- dtype: the spec's (bf16 by default) on CUDA. On the CPU the model always runs in
  float32: bf16 matmuls on a CPU are slow and only tiny test models run there.
- ``device_map`` from the spec (``"auto"`` spreads a 90B model over several GPUs) is
  used only when CUDA is present.
- Loading is ``local_files_only``: weights come from ``model_store.ensure_model``; with
  no ``model_dir`` the spec's model id is read from the local HF cache and the Hub is
  only contacted when ``HF_HUB_OFFLINE`` is not set.
- ``_generate`` is the seam for a faster decoder: the project's static-cache CUDA-graph
  engine for Mllama (``extractor.engine``) when the spec asks for it, or on "auto" for
  an Mllama model on CUDA; ``model.generate`` otherwise. Both give the same tokens.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

from extractor import jsonrepair, normalize, prompts
from extractor.backends.base import Backend
from extractor.backends.token_confidence import ScoredText, answer_confidence, decode_scored, field_confidence
from extractor.errors import ConfigError, ModelSourceError, ParseError
from extractor.images import ReceiptInput, decode_image
from extractor.schema import Receipt, scalar_fields
from extractor.spec import FP8_KV, FP8_SCHEME, ExtractorSpec

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


class HFBackend(Backend):
    """A loaded image-text-to-text model and its processor (one per worker process)."""

    def __init__(self, spec: ExtractorSpec, model_dir: str | os.PathLike | None = None):
        super().__init__(spec)
        import torch

        self._torch = torch
        self.model_dir = str(model_dir) if model_dir is not None else None
        self.questions = prompts.questions_for(spec)  # fails early on an unknown prompt version
        self.on_cuda = torch.cuda.is_available()
        self.dtype = self._pick_dtype()
        self.processor, self.model = self._load()
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # generation appends on the right: pad the left
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.generation_config = self._greedy_config()
        self.engine, self.engine_name = self._make_engine()
        self.grammar = self._make_grammar()
        self.useful_size = _useful_size(self.processor.image_processor)
        log.info("hf backend ready: %s (%s, %s, engine=%s)", self.version, type(self.model).__name__,
                 self.dtype, self.engine_name)

    # --- loading ------------------------------------------------------------------
    def _pick_dtype(self):
        torch = self._torch
        if not self.on_cuda or self.spec.dtype == "float32":
            return torch.float32
        if self.spec.dtype == "auto":
            return "auto"
        return getattr(torch, _DTYPES[self.spec.dtype])

    def _load(self):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        from extractor import quantization

        where = self.model_dir or self.spec.model_id
        kwargs: dict[str, Any] = {"local_files_only": True}
        if self.model_dir is None:
            kwargs = {"revision": self.spec.revision,
                      "local_files_only": os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")}
        try:
            processor = AutoProcessor.from_pretrained(where, **kwargs)
            load_kwargs: dict[str, Any] = dict(kwargs, dtype=self.dtype)
            if self.on_cuda and self.spec.device_map:
                load_kwargs["device_map"] = self.spec.device_map
            if self.spec.quantization in ("8bit", "4bit"):
                if not self.on_cuda:
                    raise ConfigError(f"{self.spec.quantization} quantisation needs a CUDA GPU (bitsandbytes)")
                config = AutoConfig.from_pretrained(where, **kwargs)
                skip = quantization.skip_modules_for_config(config)
                compute = self.dtype if self.dtype != "auto" else self._torch.bfloat16
                load_kwargs["quantization_config"] = quantization.bnb_config(
                    self.spec.quantization, skip, compute)
                log.info("quantising to %s, keeping out %s", self.spec.quantization, skip)
            model = AutoModelForImageTextToText.from_pretrained(where, **load_kwargs)
        except OSError as exc:  # missing files, no network, unknown repo
            raise ModelSourceError(f"cannot load model from {where}: {exc}") from exc
        if self.on_cuda and not self.spec.device_map and self.spec.quantization in (None, "fp8"):
            model = model.to("cuda")
        return processor, model.eval()

    def _greedy_config(self):
        """The checkpoint's generation config, forced to plain greedy decoding.

        Instruct checkpoints ship sampling defaults (temperature 0.6, top_p 0.9): those
        are cleared rather than left to warn, so the output is a pure function of the input.
        """
        config = copy.deepcopy(self.model.generation_config)
        config.do_sample = False
        config.num_beams = 1
        for name in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
            setattr(config, name, None)
        if config.pad_token_id is None:
            config.pad_token_id = self.processor.tokenizer.pad_token_id
        return config

    def _make_engine(self):
        wanted = self.spec.engine
        is_mllama = type(self.model).__name__ == "MllamaForConditionalGeneration"
        if wanted == "generate" or (wanted == "auto" and not (is_mllama and self.on_cuda)):
            if self.spec.quantization == "fp8":  # never a silent bf16 run stamped as fp8
                raise ConfigError("quantization 'fp8' runs in the static engine: an Mllama model on one CUDA "
                                  f"GPU (or engine: static); this is {type(self.model).__name__} "
                                  f"{'on CUDA' if self.on_cuda else 'on the CPU'}")
            return None, "generate"
        try:
            from extractor import engine as engine_pkg
            from extractor.engine import MllamaStaticEngine
        except ImportError as exc:
            if wanted == "static":
                raise ConfigError(f"engine 'static' was asked for but cannot be imported: {exc}") from exc
            log.warning("static Mllama engine unavailable (%s); using model.generate", exc)
            return None, "generate"
        supported = getattr(engine_pkg, "supports", lambda m: is_mllama)(self.model)
        if not supported:
            if wanted == "static":
                raise ConfigError(f"engine 'static' does not support {type(self.model).__name__}"
                                  f"{' (quantised)' if self.spec.quantization else ''}")
            return None, "generate"
        fp8 = self.spec.quantization == "fp8"
        if fp8 and self.on_cuda:
            import torch

            check_fp8_card(torch.cuda.get_device_name(), torch.cuda.get_device_capability())
        return MllamaStaticEngine(self.model, eos_token_id=self.generation_config.eos_token_id,
                                  pad_token_id=self.generation_config.pad_token_id,
                                  fp8=FP8_SCHEME if fp8 else False, cross_kv=FP8_KV if fp8 else "bf16",
                                  self_kv=FP8_KV if fp8 else "bf16"), "static"

    def _make_grammar(self):
        """The compiled receipt grammar when the spec constrains decoding (the default for
        the full prompt mode), built once: xgrammar compiles it against this tokenizer."""
        if self.spec.decoding_grammar is None:
            return None
        from extractor.backends.grammar import ReceiptGrammar

        vocab = self.model.get_output_embeddings().weight.shape[0]
        return ReceiptGrammar(self.processor.tokenizer, vocab, _as_ids(self.generation_config.eos_token_id))

    # --- stages -------------------------------------------------------------------
    def _preprocess(self, item: ReceiptInput) -> Any:
        # The full-resolution decode is dropped as soon as the smaller copy exists.
        return shrink_for_processor(decode_image(item.data, page=item.page), self.useful_size)

    def _forward(self, images: list[Any]) -> list[Any]:
        outputs: list[Any] = []
        for start in range(0, len(images), self.spec.batch_size):
            chunk = images[start:start + self.spec.batch_size]
            per_question = {key: self._answer_split_on_oom(chunk, question, key)
                            for key, question in self.questions.items()}
            for i in range(len(chunk)):
                answers = {key: per_question[key][i] for key in self.questions}
                failed = next((a for a in answers.values() if isinstance(a, BaseException)), None)
                if failed is not None:
                    outputs.append(failed)
                elif self.spec.prompt_mode == "fields":
                    outputs.append(answers)
                else:
                    outputs.append(answers["full"])
        return outputs

    def _answer_split_on_oom(self, images: list[Any], question: str, key: str = "full") -> list[Any]:
        """Texts for ``images``; on CUDA OOM the batch is halved and retried."""
        torch = self._torch
        try:
            return self._answer(images, question, grammar=self.grammar if key == "full" else None)
        except torch.cuda.OutOfMemoryError as exc:
            if len(images) == 1:
                log.error("out of GPU memory on a single receipt: %s", exc)
                return [exc]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(images) // 2
            log.warning("out of GPU memory on a batch of %d: retrying as %d + %d",
                        len(images), half, len(images) - half)
            return (self._answer_split_on_oom(images[:half], question, key)
                    + self._answer_split_on_oom(images[half:], question, key))

    def _answer(self, images: list[Any], question: str, grammar=None) -> list[ScoredText]:
        """One batched greedy generation (under ``grammar`` when given): the decoded new text
        of each image, carrying each token's span and probability (``ScoredText``)."""
        messages = prompts.build_messages(self.spec, question)
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.batch_inputs(images, [prompt] * len(images))
        with self._torch.inference_mode():
            new_tokens, logprobs = self._generate(inputs, self.spec.max_new_tokens, with_logprobs=True,
                                                  grammar=grammar)
        stop = _as_ids(self.generation_config.eos_token_id)
        return [decode_scored(self.processor.tokenizer, row.tolist(), lps.tolist(), stop_ids=stop)
                for row, lps in zip(new_tokens, logprobs, strict=True)]

    def batch_inputs(self, images: list[Any], texts: list[str]):
        """The collate step: one image and one chat-formatted text per row, left-padded,
        on the model's device, floating tensors in the model's dtype."""
        inputs = self.processor(images=[[image] for image in images], text=texts, padding=True,
                                add_special_tokens=False, return_tensors="pt")
        return inputs.to(self.model.device, dtype=self.model.dtype)

    def _generate(self, model_inputs, max_new_tokens: int, min_new_tokens: int = 0, *,
                  with_logprobs: bool = False, grammar=None):
        """LongTensor [B, new] of the generated tokens only (the faster-engine seam); with
        ``with_logprobs`` also float32 [B, new], each chosen token's log-probability.

        ``min_new_tokens`` pins the output length for benchmarks; extraction leaves it 0.
        Both ways score a token alike: log-softmax of the step's processed logits (after the
        min-new-tokens rule and the grammar's mask), taken at the greedy choice. ``grammar``
        (a ``ReceiptGrammar``) constrains both ways with the same per-step masks."""
        if self.engine is not None:
            return self.engine.generate(
                model_inputs["input_ids"], model_inputs["attention_mask"], model_inputs["pixel_values"],
                model_inputs["aspect_ratio_ids"], model_inputs["aspect_ratio_mask"],
                model_inputs["cross_attention_mask"], max_new_tokens, min_new_tokens=min_new_tokens,
                return_logprobs=with_logprobs, grammar=grammar)
        prompt_len = model_inputs["input_ids"].shape[1]
        config = copy.copy(self.generation_config)
        config.max_new_tokens = max_new_tokens
        config.min_new_tokens = min_new_tokens or None
        processors = []
        if grammar is not None:
            from extractor.backends.grammar import grammar_logits_processor

            if min_new_tokens:
                raise ValueError("min_new_tokens cannot be combined with a grammar (a closed JSON allows only EOS)")
            rows = model_inputs["input_ids"].shape[0]
            processors.append(grammar_logits_processor(grammar.new_batch(rows, max_new_tokens)))
        scorer = _chosen_token_scorer() if with_logprobs else None
        if scorer is not None:
            processors.append(scorer)  # last: it scores the distribution the choice is made from
        out = self.model.generate(**model_inputs, generation_config=config, logits_processor=processors or None)
        tokens = out[:, prompt_len:]
        if scorer is None:
            return tokens
        logprobs = self._torch.stack(scorer.steps, dim=1).cpu() if scorer.steps else \
            self._torch.zeros(tokens.shape, dtype=self._torch.float32)
        return tokens, logprobs[:, :tokens.shape[1]]

    def _postprocess(self, raw: Any) -> Receipt:
        if isinstance(raw, dict):
            return receipt_from_answers(raw)
        data = jsonrepair.drop_placeholders(jsonrepair.extract_json(raw))
        receipt = Receipt.model_validate(data)
        if isinstance(raw, ScoredText):  # the model's own "confidence" key, if it wrote one, is not ours
            scored = field_confidence(raw, [name for name in scalar_fields() if getattr(receipt, name) is not None])
            receipt = receipt.model_copy(update={"confidence": scored})
        return receipt

    def raw_text(self, raw: Any) -> str | None:
        if isinstance(raw, dict):
            import json

            return json.dumps(raw, ensure_ascii=False)
        return super().raw_text(raw)

    def close(self) -> None:
        self.engine = None
        self.model = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


def receipt_from_answers(answers: dict[str, str]) -> Receipt:
    """Combine the field-mode answers ({"store_name": ..., "date": ..., "total": ...}).

    A short answer is taken as the value; a sentence ("The total is RM 12.30.") has its
    date / amount searched for. An answer that says "not found" is a missing field. An
    answer that carries token probabilities (``ScoredText``) gives its field's confidence:
    the lowest probability among the answer's visible tokens.
    """
    fields: dict[str, Any] = {}
    confidence: dict[str, float] = {}
    for key, answer in answers.items():
        text = jsonrepair.drop_placeholders(_strip_answer(answer))
        if text is None:
            continue
        if key == "total" or key in ("subtotal", "tax_amount", "tip", "discount"):
            fields[key] = _find_amount(text, answer)
        else:
            fields[key] = text
        if isinstance(answer, ScoredText) and (conf := answer_confidence(answer)) is not None:
            confidence[key] = conf
    receipt = Receipt.model_validate(fields)
    return receipt.model_copy(update={"confidence": confidence}) if confidence else receipt


def check_fp8_card(name: str, capability: tuple[int, int]) -> None:
    """``quantization: fp8`` needs float8 tensor cores (compute capability 8.9: Ada, Hopper and
    later); on an older card the first batch would fail inside a GEMM, so refuse at load."""
    if tuple(capability) < (8, 9):
        raise ConfigError(f"quantization 'fp8' needs a GPU with float8 tensor cores (compute capability 8.9 "
                          f"or newer, e.g. L4, L40S, H100, H200); this is {name} ({capability[0]}.{capability[1]}): "
                          f"use the bf16 preset")


def _as_ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _chosen_token_scorer():
    """A logits processor, last in ``generate``'s list, that records each step's chosen
    token log-probability (greedy: max of the processed logits minus their logsumexp) and
    leaves the scores untouched: [B] float32 per step in ``.steps``. Only the chosen token's
    value is kept, not [B, vocab] scores per step (``output_scores`` would hold gigabytes)."""
    from transformers import LogitsProcessor

    class ChosenTokenScorer(LogitsProcessor):
        def __init__(self):
            self.steps: list[Any] = []

        def __call__(self, input_ids, scores):
            scores32 = scores.float()
            self.steps.append(scores32.amax(dim=-1) - scores32.logsumexp(dim=-1))
            return scores

    return ChosenTokenScorer()


def _strip_answer(answer: str) -> str:
    text = answer.strip().strip("`").strip()
    for prefix in ("answer:", "a:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):].strip()
    return text.strip(" \"'").rstrip(".") if len(text) < 200 else text


def _find_amount(text: str, raw: str):
    import re

    try:
        return normalize.parse_money(text)
    except ValueError:
        pass
    m = re.search(r"[-(]?\d[\d.,' ]*\d|\d", text)
    if not m:
        raise ParseError(f"no amount in answer {raw!r}")  # raw_text: all answers, from raw_text()
    return normalize.parse_money(m.group(0))


def _useful_size(image_processor) -> tuple[str, int]:
    """How far an image can be shrunk before the processor sees it: ("long"|"short", px).

    Mllama tiles up to ``max_image_tiles`` tiles of ``size`` px per side, so nothing
    beyond that canvas on the long side is used; processors that resize the short side
    (CLIP, LLaVA) or to a fixed size need their size on the short side. Generous (2x) for
    the latter, so the processor's own resampling, not ours, decides the final pixels.
    """
    size = getattr(image_processor, "size", None) or {}
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    tiles = getattr(image_processor, "max_image_tiles", None)
    if tiles and get("height"):
        return "long", int(get("height") * tiles)
    if get("longest_edge"):
        return "long", int(get("longest_edge"))
    short = get("shortest_edge") or max(get("height") or 0, get("width") or 0)
    if short:
        return "short", int(2 * short)
    return "long", 4480  # unknown processor: keep plenty


def shrink_for_processor(image, useful: tuple[str, int]):
    """``image`` resized down (never up) so its long/short side is at most ``useful``."""
    side, px = useful
    ref = max(image.size) if side == "long" else min(image.size)
    if ref <= px:
        return image
    scale = px / ref
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    from PIL import Image

    return image.resize(new_size, Image.Resampling.BICUBIC)
