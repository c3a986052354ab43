"""Prompts: versioned, driven by the schema, rendered with the image by real chat templates."""

from __future__ import annotations

import hashlib
import json

import pytest

from extractor import prompts
from extractor.errors import ConfigError
from extractor.schema import LineItem, Receipt, scalar_fields
from extractor.spec import resolve_spec

# sha256 of the v1 wording. A changed wording is a new prompt version (results are keyed
# by it), so editing v1 in place must fail here: add "v2" to PROMPTS instead.
V1_SHA256 = "e42bcf4d59905387ffeca00e6357201c9e3b772badfc3bff82b926152c31b90d"


def test_v1_wording_is_frozen():
    p = prompts.PROMPTS["v1"]
    digest = hashlib.sha256(json.dumps([p.full, p.fields], sort_keys=True).encode()).hexdigest()
    assert digest == V1_SHA256, "prompt v1 changed: add a new version instead of editing v1"


def test_full_prompt_json_shape_comes_from_the_schema():
    text = prompts.full_prompt("v1")
    start = text.index("{")
    shape = json.JSONDecoder().raw_decode(text, start)[0]
    assert list(shape) == scalar_fields() + ["line_items"]
    assert set(shape["line_items"][0]) == set(LineItem.model_fields)
    assert shape["total"] == Receipt.model_fields["total"].description


def test_field_questions_name_receipt_fields():
    questions = prompts.field_questions("v1")
    assert set(questions) == {"store_name", "date", "total"}
    assert set(questions) <= set(Receipt.model_fields)


def test_questions_for_each_mode():
    full = resolve_spec({"backend": "hf", "model_id": "m"})
    fields = resolve_spec({"backend": "hf", "model_id": "m", "prompt_mode": "fields"})
    assert list(prompts.questions_for(full)) == ["full"]
    assert prompts.questions_for(fields) == prompts.field_questions("v1")


def test_messages_put_the_image_first_in_the_user_turn():
    spec = resolve_spec({"backend": "hf", "model_id": "m"})
    (message,) = prompts.build_messages(spec)
    assert message["role"] == "user"
    assert message["content"][0] == {"type": "image"}
    assert message["content"][1]["text"] == prompts.full_prompt("v1")
    assert prompts.build_messages(spec, "What is the total?")[0]["content"][1]["text"] == "What is the total?"


def test_unknown_version_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown prompt version"):
        prompts.full_prompt("v0")
    spec = resolve_spec({"backend": "hf", "model_id": "m", "prompt_version": "v99"})
    with pytest.raises(ConfigError):
        prompts.questions_for(spec)


@pytest.mark.parametrize("kind, image_token", [("mllama", "<|image|>"), ("llava", "<image>")])
def test_chat_templates_render_one_image_token_and_the_question(tiny_model_dirs, kind, image_token):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dirs[kind], local_files_only=True)
    spec = resolve_spec({"backend": "hf", "model_id": "m"})
    text = processor.apply_chat_template(prompts.build_messages(spec), add_generation_prompt=True)
    assert text.count(image_token) == 1
    assert text.index(image_token) < text.index("Read this receipt")
    assert prompts.full_prompt("v1") in text
