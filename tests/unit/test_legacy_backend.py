"""The legacy backend loads a real remote-code model folder (trust_remote_code, offline).

The folder is written by the test: a small modelling file with ``answer_question``,
an ``auto_map`` in config.json, safetensors weights and a locally trained tokenizer,
exactly the layout of the prototype's repository. Its answers depend on the image and
on a loaded weight, so the test sees that both reached the model.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import sys
import textwrap
from decimal import Decimal

import pytest

from extractor.errors import ConfigError
from extractor.images import ReceiptInput
from extractor.spec import resolve_spec

pytestmark = pytest.mark.filterwarnings("ignore")

MODELING = textwrap.dedent('''
    """Stand-in for the prototype's Llamavision modelling code (loaded as remote code)."""
    import torch
    from transformers import PretrainedConfig, PreTrainedModel


    class TinyVisionConfig(PretrainedConfig):
        model_type = "tinyvision"

        def __init__(self, hidden=4, **kwargs):
            self.hidden = hidden
            super().__init__(**kwargs)


    class TinyVisionModel(PreTrainedModel):
        config_class = TinyVisionConfig

        def __init__(self, config):
            super().__init__(config)
            self.price_scale = torch.nn.Linear(1, 1, bias=False)
            self.post_init()

        def _init_weights(self, module):
            pass

        def answer_question(self, image, question, tokenizer, max_new_tokens=128, do_sample=True):
            if do_sample:
                raise ValueError("the extractor must decode greedily")
            n_tokens = len(tokenizer(question)["input_ids"])
            pixels = torch.tensor(list(image.convert("L").getdata()), dtype=torch.float32)
            mean = float(pixels.mean())
            if "explode" in str(image.info.get("comment", b"")):
                raise RuntimeError("remote code crashed on this image")
            q = question.lower()
            if "name" in q:
                return f"TINY MART {n_tokens > 0}"
            if "date" in q:
                return f"The date is {1 + int(mean) % 28:02d}/03/2018."
            if "total" in q:
                return f"RM {mean * float(self.price_scale.weight):.2f}"
            return "unknown question"
''')


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory):
    import torch

    from extractor.testing.tiny_models import _train_tokenizer

    folder = tmp_path_factory.mktemp("llamavision-1b")
    source = tmp_path_factory.mktemp("src") / "modeling_tinyvision.py"  # save_pretrained copies it
    source.write_text(MODELING)
    spec = importlib.util.spec_from_file_location("modeling_tinyvision", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules["modeling_tinyvision"] = module
    spec.loader.exec_module(module)
    try:
        module.TinyVisionConfig.register_for_auto_class()
        module.TinyVisionModel.register_for_auto_class("AutoModelForCausalLM")
        model = module.TinyVisionModel(module.TinyVisionConfig())
        with torch.no_grad():
            model.price_scale.weight.fill_(0.5)
        model.save_pretrained(folder)
    finally:
        del sys.modules["modeling_tinyvision"]  # the backend must load it as remote code
    tokenizer = _train_tokenizer(["<s>", "</s>", "<pad>", "<unk>"], bos="<s>", eos="</s>", pad="<pad>",
                                 unk="<unk>")
    tokenizer.save_pretrained(folder)
    return folder


def _gray_jpeg(level: int, comment: bytes = b"") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (64, 96), level).convert("RGB").save(buf, "JPEG", quality=95, comment=comment)
    return buf.getvalue()


@pytest.fixture(scope="module")
def backend(legacy_dir):
    from extractor.backends.legacy import LegacyRemoteCodeBackend

    spec = resolve_spec({"preset": "llamavision-1b-legacy", "revision": "r1"})
    return LegacyRemoteCodeBackend(spec, model_dir=legacy_dir)


def test_config_names_the_remote_code(legacy_dir):
    config = json.loads((legacy_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_tinyvision.TinyVisionModel"


def test_remote_code_model_answers_field_questions(backend):
    items = [ReceiptInput.from_bytes(_gray_jpeg(100), "a"), ReceiptInput.from_bytes(_gray_jpeg(200), "b"),
             ReceiptInput.from_bytes(b"", "empty")]
    a, b, empty = backend.extract(items)
    assert type(backend.model).__module__.startswith("transformers_modules")  # loaded as remote code
    assert a.status == "ok" and b.status == "ok", (a.reason, b.reason)
    assert a.receipt.store_name == "TINY MART True"  # the tokenizer reached answer_question
    # image mean 100 -> day 100 % 28 + 1 = 17, total 100 * 0.5 (the loaded weight)
    assert a.receipt.date == dt.date(2018, 3, 17) and a.receipt.total == Decimal("50.00")
    assert b.receipt.date == dt.date(2018, 3, 5) and b.receipt.total == Decimal("100.00")
    assert json.loads(a.raw_text)["total"] == "RM 50.00"
    assert a.extractor_version == "legacy-remote-code:internal/llamavision-1b@r1:v1"
    assert empty.status == "failed" and "empty file" in empty.reason


def test_a_crash_in_remote_code_fails_only_that_receipt(backend):
    items = [ReceiptInput.from_bytes(_gray_jpeg(90, comment=b"explode"), "bad"),
             ReceiptInput.from_bytes(_gray_jpeg(120), "good")]
    bad, good = backend.extract(items)
    assert bad.status == "failed" and "RuntimeError: remote code crashed" in bad.reason
    assert good.status == "ok"


def test_remote_code_is_only_run_when_the_spec_says_so(legacy_dir):
    from extractor.backends.legacy import LegacyRemoteCodeBackend

    with pytest.raises(ConfigError):
        resolve_spec({"backend": "legacy-remote-code", "model_id": "internal/llamavision-1b"})
    spec = resolve_spec({"preset": "llamavision-1b-legacy"}).model_copy(update={"trust_remote_code": False})
    with pytest.raises(ConfigError, match="trust_remote_code"):
        LegacyRemoteCodeBackend(spec, model_dir=legacy_dir)
