"""Extractor specs and presets: which backend, model, revision and prompt to run.

A spec is what the ``model`` key of the configuration holds (``receipts.yaml`` for the CLI,
the Airflow Variable ``receipts_config`` for the pipeline): a preset name, or an object with
``preset`` and overrides, or with ``model_path`` (a local folder), or a full spec. Its ``version`` string is
the lineage key: receipts are re-extracted when it changes and rows are keyed by it,
so switching back to an earlier spec is a rollback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from extractor.errors import ConfigError
from extractor.ocr import PARSER_VERSION

Backend = Literal["hf", "ocr", "legacy-remote-code"]


class ExtractorSpec(BaseModel):
    """Everything that decides what an extraction produces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend
    model_id: str = Field(description="HF repo id (or a name for the OCR engine)")
    revision: str | None = Field(None, description="pinned commit/tag; None means 'main'")
    source: str | None = Field(
        None, description="where the weights come from: None/'hf' (the Hub), 's3://bucket/prefix', "
                          "or a local directory; defaults to the Hub")
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    quantization: Literal["8bit", "4bit", "fp8"] | None = Field(
        None, description="'8bit' / '4bit': bitsandbytes (generate); 'fp8': float8 decode weights in the "
                          "static engine (Hopper GPUs; weight-only, bf16 activations) and float8 keys/values "
                          "(the image's and the cache's), prefill in bf16")
    batch_size: int = Field(8, ge=1, le=1024)
    max_new_tokens: int = Field(512, ge=1, le=8192)
    prompt_version: str = "v1"
    prompt_mode: Literal["full", "fields"] = "full"
    trust_remote_code: bool = False
    device_map: str | None = "auto"
    engine: Literal["auto", "generate", "static"] = Field(
        "auto", description="'static': the project's graph-captured Mllama decoder; "
                            "'generate': plain transformers generate; 'auto' picks")
    grammar: Literal["receipt-json", "none"] | None = Field(
        None, description="schema-constrained decoding: 'receipt-json' (the hf backend's default in the "
                          "full prompt mode) lets the model write only a Receipt-shaped JSON object that "
                          "closes within max_new_tokens; 'none' decodes freely")

    @model_validator(mode="after")
    def _check(self) -> ExtractorSpec:
        if self.backend == "legacy-remote-code" and not self.trust_remote_code:
            raise ValueError("the legacy-remote-code backend runs the model repo's own code: "
                             "set trust_remote_code: true explicitly to allow it")
        if self.backend == "hf" and self.trust_remote_code:
            raise ValueError("trust_remote_code is only for the legacy-remote-code backend")
        if self.quantization == "fp8" and (self.backend != "hf" or self.engine == "generate"):
            raise ValueError("quantization 'fp8' is the static engine's (hf backend, engine auto or static)")
        if self.grammar == "receipt-json" and (self.backend != "hf" or self.prompt_mode != "full"):
            raise ValueError("grammar 'receipt-json' constrains the hf backend's full-receipt JSON answer; "
                             f"it does not apply to backend {self.backend!r} in prompt mode {self.prompt_mode!r}")
        return self

    @property
    def decoding_grammar(self) -> str | None:
        """The grammar decoding is constrained by, or None (the default: 'receipt-json' for
        the hf backend's full prompt mode, nothing elsewhere)."""
        if self.grammar == "none" or self.backend != "hf" or self.prompt_mode != "full":
            return None
        return "receipt-json"

    @property
    def version(self) -> str:
        """Lineage key: backend + model id + revision + prompt version (+ quantisation, + the
        decoding grammar: constrained output is other output)."""
        quant = f"+{QUANT_TAGS.get(self.quantization, self.quantization)}" if self.quantization else ""
        grammar = f"+{self.decoding_grammar}" if self.decoding_grammar else ""
        return f"{self.backend}:{self.model_id}@{self.revision or 'main'}{quant}:{self.prompt_version}{grammar}"


# The production preset is pinned to a commit (the newest snapshot of the repo found in public
# references; the Hub cannot be reached from where this was written: check it with
# ``huggingface_hub.model_info`` before a deploy). The others name a branch, which
# ``model_store.pin_revision`` resolves to its commit before any download, so the extractor
# version always names one immutable snapshot and an upstream push is never silent.
LLAMA_11B_INSTRUCT_COMMIT = "9eb2daaa8597bf192a8b0e73f848f3a102794df5"
# What ``quantization: fp8`` runs in the static engine: float8 weights with per-row scales and
# bf16 activations (engine/fp8_gemm.py), faster than per-row ``_scaled_mm`` on an H100 (1.14x
# against 1.08x the bf16 engine) and on an H200 (1.07x against 1.00x), and nearer bf16 on
# random weights' first step (docs/gpu.md). Rows made before 2026-12-07 by the per-row
# ``_scaled_mm`` scheme say "+fp8:". Since 2026-12-07 (later that day) the keys/values are float8
# too, the image's and the self-attention cache's (``FP8_KV``, engine/fp8_attention.py): 1.26x
# against 1.14x the bf16 engine at batch 32 on an H100; first-step logits with the gates opened
# 0.12 from bf16 (the image's alone 0.021), where the FP8 weights alone give 0.39 (docs/gpu.md).
# Rows made with bf16 keys/values say "+fp8-weight-only:".
FP8_SCHEME = "weight-only"
FP8_KV = "fp8"
QUANT_TAGS = {"fp8": f"fp8-{FP8_SCHEME}-{FP8_KV}-kv"}  # the quantization as the extractor version names it
OCR_FAST_REVISION = "3.10.0+latin-head+w160+first-read"
PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.2-11b-vision-instruct": dict(
        backend="hf", model_id="meta-llama/Llama-3.2-11B-Vision-Instruct",
        revision=LLAMA_11B_INSTRUCT_COMMIT, batch_size=32, max_new_tokens=512),
    # Opt-in on Hopper (H100 / H200): the same weights, FP8 decode GEMMs in the static engine.
    "llama-3.2-11b-vision-instruct-fp8": dict(
        backend="hf", model_id="meta-llama/Llama-3.2-11B-Vision-Instruct",
        revision=LLAMA_11B_INSTRUCT_COMMIT, batch_size=32, max_new_tokens=512, quantization="fp8",
        engine="static"),
    "llama-3.2-11b-vision": dict(
        backend="hf", model_id="meta-llama/Llama-3.2-11B-Vision",
        revision="main", batch_size=32, max_new_tokens=512),
    "llama-3.2-90b-vision-instruct": dict(
        backend="hf", model_id="meta-llama/Llama-3.2-90B-Vision-Instruct",
        revision="main", batch_size=16, max_new_tokens=512, device_map="auto"),
    # The prototype's in-house 1B model with the ``answer_question`` interface, kept for
    # rollback. It is not on the public Hub: point ``source`` at its S3 prefix or folder.
    "llamavision-1b-legacy": dict(
        backend="legacy-remote-code", model_id="internal/llamavision-1b", revision="main",
        trust_remote_code=True, batch_size=1, max_new_tokens=256, prompt_mode="fields",
        dtype="float16"),
    # revision: the rapidocr wheel, plus what its reader does differently from the wheel's
    # defaults ("3.10.0+latin-head"); extractor.backends.ocr.READERS maps each to its settings
    "ocr": dict(backend="ocr", model_id="rapidocr", revision="3.10.0", batch_size=16,
                prompt_version=PARSER_VERSION, device_map=None),
    # Opt-in: the same wheel with the speed knobs that each cost a little accuracy (the cut
    # head, narrower recogniser inputs, no second opinion): ~28 % less CPU, address exact
    # -1.7 points on unseen stores (docs/ocr.md "An opt-in fast preset"). The backend maps
    # the revision to its settings (extractor.backends.ocr.READERS).
    "ocr-fast": dict(backend="ocr", model_id="rapidocr", revision=OCR_FAST_REVISION, batch_size=16,
                     prompt_version=PARSER_VERSION, device_map=None),
}
DEFAULT_PRESET = "llama-3.2-11b-vision-instruct"
EMBEDDED_DEFAULT_PRESET = "ocr"


def resolve_spec(value: str | Mapping[str, Any] | ExtractorSpec | None,
                 overrides: Mapping[str, Any] | None = None) -> ExtractorSpec:
    """Turn a Variable value (preset name, JSON text or dict) plus overrides into a spec.

    ``{"preset": "ocr", "batch_size": 4}`` starts from a preset; ``{"model_path": DIR, ...}``
    loads the weights from a local folder (the production preset's model unless ``preset``
    or ``backend`` says otherwise); any other dict must be a full spec. Overrides (DAG-run
    params for a backfill) win. A spec that changes a remote-code preset's ``model_id``
    without saying ``trust_remote_code: true`` itself is refused: it would run another
    repository's code under a permission given for the preset's own.
    """
    data = _spec_data(value)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    model_path = data.pop("model_path", None)
    if model_path is not None:
        data["source"] = str(model_path)
        if "backend" not in data:
            data.setdefault("preset", DEFAULT_PRESET)
    preset = data.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown extractor preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        base = PRESETS[preset]
        if base.get("trust_remote_code") and "trust_remote_code" not in data \
                and data.get("model_id", base["model_id"]) != base["model_id"]:
            raise ConfigError(f"preset {preset!r} trusts its own repository's code; a spec that changes "
                              f"its model_id to {data['model_id']!r} must set trust_remote_code itself")
        data = {**base, **data}
    try:
        return ExtractorSpec(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid extractor spec: {exc}") from exc


def _spec_data(value: str | Mapping[str, Any] | ExtractorSpec | None) -> dict[str, Any]:
    """A setting's value (spec, preset name, JSON text or dict) as a dict to resolve."""
    if isinstance(value, ExtractorSpec):
        return value.model_dump()
    if value is None or (isinstance(value, str) and not value.strip()):
        return {"preset": DEFAULT_PRESET}
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            return {"preset": text}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"extractor spec is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"extractor spec must be a JSON object, got {type(data).__name__}")
        return data
    return dict(value)


ALLOWED_MODELS_KEY = "allowed_models"  # of receipts_config / receipts.yaml (RECEIPT_ALLOWED_MODELS)


def resolve_run_override(value: str | Mapping[str, Any], allowed_model_ids: Iterable[str] = ()
                         ) -> ExtractorSpec:
    """A DAG run's ``extractor`` conf as a spec, or ``ConfigError`` (one line) when it asks
    for what only the admin configuration may choose: ``trust_remote_code`` (running a
    repository's own code), or a model repository that is neither a preset's nor in the
    admin's ``allowed_model_ids`` (key ``allowed_models`` of the configuration), or other weights
    (``source``) for a repository the admin did not list. Presets, pinned revisions and
    tuning (batch size, dtype, ...) are a run's to pick. Called before anything is
    downloaded."""
    data = _spec_data(value)  # the admin configuration: the "model" key of receipts_config
    if data.get("trust_remote_code"):
        raise ConfigError("a run's conf may not set trust_remote_code: only the admin configuration "
                          "(the model key of the Variable receipts_config, or RECEIPT_MODEL) may")
    spec = resolve_spec(data)
    if spec.trust_remote_code:
        raise ConfigError(f"{spec.model_id!r} runs its repository's own code (trust_remote_code): only "
                          f"the admin configuration may choose it, not a run's conf")
    admin_listed = spec.model_id in set(allowed_model_ids)
    presets = {p["model_id"] for p in PRESETS.values() if not p.get("trust_remote_code")}
    if not admin_listed and spec.model_id not in presets:
        raise ConfigError(f"model {spec.model_id!r} is not a preset's: a run's conf may pick presets and "
                          f"revisions; an admin lists other repositories under {ALLOWED_MODELS_KEY!r}")
    weights = data.get("source") or data.get("model_path")
    if not admin_listed and weights is not None:
        raise ConfigError(f"a run's conf may not point {spec.model_id!r} at other weights "
                          f"({weights!r}) unless an admin lists it under {ALLOWED_MODELS_KEY!r}")
    return spec
