"""Versioned prompts for the vision-language backends.

A prompt is part of what an extraction produces, so its version is part of the
extractor version (``spec.prompt_version``): a new wording is a new version here,
never an edit of an old one, and results keep saying which wording made them.

Two modes (``spec.prompt_mode``):
- ``full``: one question asking for the whole receipt as JSON, whose shape comes from
  ``extractor.schema.prompt_json_shape()`` (so a schema change reaches the prompt);
- ``fields``: the prototype's field-specific questions (store name, date, total), one
  generation per field, combined into a ``Receipt`` by the backend.

The image goes first in the user turn and there is no system turn: Llama 3.2 Vision
was trained with the image at the start of the user message, and its chat template
does not accept a system prompt together with an image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from extractor.errors import ConfigError
from extractor.schema import prompt_json_shape


@dataclass(frozen=True)
class PromptSet:
    """One version of the prompts. ``full`` has a ``{json_shape}`` slot."""

    version: str
    full: str
    fields: dict[str, str] = field(default_factory=dict)


_V1_FULL = """\
Read this receipt and return its contents as one JSON object with exactly these keys:
{json_shape}
Rules: copy text as printed; dates as YYYY-MM-DD; times as HH:MM (24 hour); amounts as \
numbers without currency symbols; currency as an ISO 4217 code; use null for anything \
not on the receipt. Return only the JSON object, no explanation."""

# The seed guide's questions (the legacy 1B model was tuned on these wordings).
_V1_FIELDS = {
    "store_name": "What is the name of the store or company that issued this receipt? "
                  "Answer with the name only.",
    "date": "What is the date of this receipt? Answer with the date only.",
    "total": "What is the total amount paid on this receipt? Answer with the amount only.",
}

PROMPTS: dict[str, PromptSet] = {
    "v1": PromptSet(version="v1", full=_V1_FULL, fields=_V1_FIELDS),
}


def prompt_set(version: str) -> PromptSet:
    try:
        return PROMPTS[version]
    except KeyError:
        raise ConfigError(f"unknown prompt version {version!r}; known: {', '.join(sorted(PROMPTS))}") from None


def full_prompt(version: str = "v1") -> str:
    """The full-extraction question, with the schema's JSON shape filled in."""
    shape = json.dumps(prompt_json_shape(), indent=1, ensure_ascii=False)
    return prompt_set(version).full.format(json_shape=shape)


def field_questions(version: str = "v1") -> dict[str, str]:
    """Receipt field name -> question, for ``prompt_mode="fields"``."""
    return dict(prompt_set(version).fields)


def questions_for(spec) -> dict[str, str]:
    """What to ask for one receipt under ``spec``: {key: question}.

    ``full`` mode asks one question under the key ``"full"``; ``fields`` mode asks one
    per receipt field.
    """
    if spec.prompt_mode == "fields":
        return field_questions(spec.prompt_version)
    return {"full": full_prompt(spec.prompt_version)}


def build_messages(spec, question: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for one receipt: a user turn with the image, then the question.

    ``question`` defaults to the full-extraction prompt of ``spec.prompt_version``; in
    ``fields`` mode the backend calls this once per question of ``questions_for``.
    """
    text = question if question is not None else full_prompt(spec.prompt_version)
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
