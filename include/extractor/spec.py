"""Extractor specs and presets: which backend, model, revision and prompt to run.

A spec is what the ``model`` key of the configuration holds (``receipts.yaml`` for the CLI,
the Airflow Variable ``receipts_config`` for the pipeline): a preset name, or an object with
``preset`` and overrides, or with ``model_path`` (a local folder), or a full spec. Its ``version`` string is
the lineage key: receipts are re-extracted when it changes and rows are keyed by it,
so switching back to an earlier spec is a rollback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    quantization: Literal["8bit", "4bit"] | None = None
    batch_size: int = Field(8, ge=1, le=1024)
    max_new_tokens: int = Field(512, ge=1, le=8192)
    prompt_version: str = "v1"
    prompt_mode: Literal["full", "fields"] = "full"
    trust_remote_code: bool = False
    device_map: str | None = "auto"
    engine: Literal["auto", "generate", "static"] = Field(
        "auto", description="'static': the project's graph-captured Mllama decoder; "
                            "'generate': plain transformers generate; 'auto' picks")

    @model_validator(mode="after")
    def _check(self) -> ExtractorSpec:
        if self.backend == "legacy-remote-code" and not self.trust_remote_code:
            raise ValueError("the legacy-remote-code backend runs the model repo's own code: "
                             "set trust_remote_code: true explicitly to allow it")
        if self.backend == "hf" and self.trust_remote_code:
            raise ValueError("trust_remote_code is only for the legacy-remote-code backend")
        return self

    @property
    def version(self) -> str:
        """Lineage key: backend + model id + revision + prompt version (+ quantisation)."""
        quant = f"+{self.quantization}" if self.quantization else ""
        return f"{self.backend}:{self.model_id}@{self.revision or 'main'}{quant}:{self.prompt_version}"


# The production preset is pinned to a commit (the newest snapshot of the repo found in public
# references; the Hub cannot be reached from where this was written: check it with
# ``huggingface_hub.model_info`` before a deploy). The others name a branch, which
# ``model_store.pin_revision`` resolves to its commit before any download, so the extractor
# version always names one immutable snapshot and an upstream push is never silent.
LLAMA_11B_INSTRUCT_COMMIT = "9eb2daaa8597bf192a8b0e73f848f3a102794df5"
PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.2-11b-vision-instruct": dict(
        backend="hf", model_id="meta-llama/Llama-3.2-11B-Vision-Instruct",
        revision=LLAMA_11B_INSTRUCT_COMMIT, batch_size=32, max_new_tokens=512),
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
    "ocr": dict(backend="ocr", model_id="rapidocr", revision="3.10.0", batch_size=16,
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
    params for a backfill) win.
    """
    if isinstance(value, ExtractorSpec):
        data: dict[str, Any] = value.model_dump()
    elif value is None or (isinstance(value, str) and not value.strip()):
        data = {"preset": DEFAULT_PRESET}
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"extractor spec is not valid JSON: {exc}") from exc
        else:
            data = {"preset": text}
    else:
        data = dict(value)
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
        data = {**PRESETS[preset], **data}
    try:
        return ExtractorSpec(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid extractor spec: {exc}") from exc
