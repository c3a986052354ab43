"""The ``legacy-remote-code`` backend: the prototype's 1B "Llamavision" model, kept for rollback.

That model is not a ``transformers`` architecture: its repository ships its own
modelling code, loaded with ``trust_remote_code=True``, and answers one question at a
time through ``model.answer_question(image, question, tokenizer, ...)``. Running a
repository's code is only done when the spec says ``trust_remote_code: true`` (the
spec validator refuses this backend otherwise, and this class checks again), and only
from the local folder ``ensure_model`` verified against its manifest.

It asks the seed guide's field questions (store name, date, total; ``prompts.v1``)
one receipt at a time, greedy, and combines the answers like the ``hf`` backend's
``fields`` mode does.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from extractor import prompts
from extractor.backends.base import Backend
from extractor.backends.hf import receipt_from_answers, shrink_for_processor
from extractor.errors import ConfigError, ModelSourceError
from extractor.schema import Receipt
from extractor.spec import ExtractorSpec

log = logging.getLogger(__name__)

# The prototype resized receipts to at most this side before answering.
MAX_SIDE = 1344


class LegacyRemoteCodeBackend(Backend):
    """A remote-code model with ``answer_question``; one receipt, one question at a time."""

    def __init__(self, spec: ExtractorSpec, model_dir: str | os.PathLike | None = None):
        super().__init__(spec)
        if not spec.trust_remote_code:
            raise ConfigError("legacy-remote-code runs the model repository's own code: "
                              "the spec must set trust_remote_code: true")
        import torch

        self._torch = torch
        self.questions = prompts.field_questions(spec.prompt_version)
        where = str(model_dir) if model_dir is not None else spec.model_id
        offline = model_dir is not None or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true")
        self.model, self.tokenizer = self._load(where, offline)
        if not callable(getattr(self.model, "answer_question", None)):
            raise ConfigError(f"{type(self.model).__name__} from {where} has no answer_question method")

    def _load(self, where: str, offline: bool):
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        torch = self._torch
        on_cuda = torch.cuda.is_available()
        dtype = getattr(torch, self.spec.dtype) if on_cuda and self.spec.dtype != "auto" else torch.float32
        kwargs = dict(trust_remote_code=True, local_files_only=offline,
                      revision=None if offline else self.spec.revision)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
            try:
                model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
            except ValueError:  # the repo registers its class under AutoModel only
                model = AutoModel.from_pretrained(where, dtype=dtype, **kwargs)
        except OSError as exc:
            raise ModelSourceError(f"cannot load legacy model from {where}: {exc}") from exc
        if on_cuda:
            model = model.to("cuda")
        return model.eval(), tokenizer

    def _preprocess(self, item) -> Any:
        image = super()._preprocess(item)
        return shrink_for_processor(image, ("long", MAX_SIDE))

    def _forward(self, images: list[Any]) -> list[Any]:
        outputs: list[Any] = []
        with self._torch.inference_mode():
            for image in images:
                try:
                    outputs.append({key: self._ask(image, question) for key, question in self.questions.items()})
                except self._torch.cuda.OutOfMemoryError:
                    raise  # a card too small for one receipt is a run-level problem
                except Exception as exc:  # noqa: BLE001 - the repo's own code may raise anything;
                    # it becomes this receipt's failed result (with the reason), not a lost batch
                    log.warning("answer_question failed: %s: %s", type(exc).__name__, exc)
                    outputs.append(exc)
        return outputs

    def _ask(self, image, question: str) -> str:
        answer = self.model.answer_question(image, question, self.tokenizer,
                                            max_new_tokens=self.spec.max_new_tokens, do_sample=False)
        return answer if isinstance(answer, str) else str(answer)

    def _postprocess(self, raw: Any) -> Receipt:
        return receipt_from_answers(raw)

    def raw_text(self, raw: Any) -> str | None:
        return json.dumps(raw, ensure_ascii=False) if isinstance(raw, dict) else super().raw_text(raw)

    def close(self) -> None:
        self.model = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()
