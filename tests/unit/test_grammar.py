"""Schema-constrained decoding (the ``hf`` backend's default): xgrammar's receipt grammar
applied as a token mask by ``generate`` (logits processor) and by the static engine.

On the CPU with real tiny models and their locally trained tokenizer: the engine and
``generate`` choose the same tokens with the same probabilities under the grammar, every
output parses into a ``Receipt``, and outputs close within ``max_new_tokens``. The budget
guard is checked with random logits over the real tokenizer (a random-weight tiny model
mostly closes its object at once, so it cannot reach the guard by itself).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
xgr = pytest.importorskip("xgrammar")

from extractor import jsonrepair  # noqa: E402
from extractor.backends.grammar import ReceiptGrammar, apply_bitmask, receipt_output_schema  # noqa: E402
from extractor.backends.hf import HFBackend  # noqa: E402
from extractor.errors import ConfigError  # noqa: E402
from extractor.images import ReceiptInput  # noqa: E402
from extractor.schema import Receipt  # noqa: E402
from extractor.spec import resolve_spec  # noqa: E402
from tests.unit.hf_inputs import engine_and_generate, noise_image, noise_jpeg, tiny_spec  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


def _spec(kind, **overrides):
    return tiny_spec(kind, **{"max_new_tokens": 40, **overrides})


@pytest.fixture(scope="module")
def tokenizer(tiny_mllama_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_mllama_dir).tokenizer


@pytest.fixture(scope="module")
def grammar(tokenizer):
    return ReceiptGrammar(tokenizer, len(tokenizer), [tokenizer.eos_token_id])


def _walk(grammar, tokenizer, max_new, seed):
    """Decode with random logits under the grammar: what a random-weight model with a large
    vocabulary does (it rarely picks the closing token by itself)."""
    g = torch.Generator().manual_seed(seed)
    rules = grammar.new_batch(1, max_new)
    tokens = []
    for _ in range(max_new):
        logits = torch.randn(1, grammar.vocab_size, generator=g)
        logits[0, tokenizer.convert_tokens_to_ids("}")] -= 4.0  # closing early would be too easy
        apply_bitmask(logits, rules.fill())
        tokens.append(int(logits.argmax()))
        rules.advance(tokens[-1:])
        if tokens[-1] == tokenizer.eos_token_id:
            break
    return tokens, rules


def test_random_choices_under_the_grammar_always_parse_and_close_within_the_budget(grammar, tokenizer):
    for max_new in (grammar.reserve + 2, 60, 150):
        for seed in range(12):
            tokens, rules = _walk(grammar, tokenizer, max_new, seed)
            assert len(tokens) <= max_new
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            assert rules.matchers[0].is_completed() or rules.matchers[0].is_terminated(), (max_new, text)
            Receipt.model_validate(jsonrepair.drop_placeholders(jsonrepair.extract_json(text)))
            assert rules.left_grammar == 0


def test_without_the_budget_guard_outputs_run_out_inside_a_value(grammar, tokenizer, monkeypatch):
    """The guard is what closes them: with no reserve the same walks end unclosed."""
    def unclosed(seeds):
        return sum(not _walk(grammar, tokenizer, 60, seed)[1].matchers[0].is_completed() for seed in seeds)

    assert unclosed(range(12)) == 0
    monkeypatch.setattr(grammar, "reserve", 0)
    assert unclosed(range(12)) >= 3


def test_packed_bitmask_is_applied_like_xgrammar(grammar):
    rules = grammar.new_batch(3, 50)
    rules.advance([grammar.texts.index("{")] * 3)
    mask = rules.fill()
    ours, theirs = torch.zeros(3, grammar.vocab_size), torch.zeros(3, grammar.vocab_size)
    apply_bitmask(ours, mask)
    xgr.apply_token_bitmask_inplace(theirs, mask)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert 0 < int((~torch.isinf(ours[0])).sum()) < grammar.vocab_size


def test_schema_is_the_prompt_shape_with_typed_values():
    schema = receipt_output_schema()
    from extractor.schema import prompt_json_shape

    assert list(schema["properties"]) == list(prompt_json_shape())
    assert schema["properties"]["currency"]["anyOf"][0]["enum"][:2] == ["AED", "AFN"]
    assert "pattern" in schema["properties"]["total"]["anyOf"][0]


@pytest.fixture(scope="module")
def pair(tiny_mllama_dir):
    pytest.importorskip("extractor.engine.mllama")
    return engine_and_generate(tiny_mllama_dir, max_new_tokens=40)


def test_engine_and_generate_agree_under_the_grammar(pair):
    static, generate = pair
    assert static.grammar is not None and static.spec.version.endswith("+receipt-json")
    images = [noise_image(20 + i, size) for i, size in enumerate([(60, 150), (150, 60), (90, 90), (70, 120)])]
    a, b = static._forward(images), generate._forward(images)
    assert [str(x) for x in a] == [str(y) for y in b]
    for x, y in zip(a, b, strict=True):
        assert np.allclose([p for *_, p in x.token_spans], [p for *_, p in y.token_spans], atol=1e-5)


@pytest.mark.parametrize("kind", ["mllama", "llava"])
def test_every_constrained_output_parses_into_a_receipt(tiny_model_dirs, kind):
    """Free decoding of the same random models gives only failures
    (test_hf_backend.test_random_model_gives_failed_results_with_reason_and_raw_text)."""
    backend = HFBackend(_spec(kind, max_new_tokens=30), model_dir=tiny_model_dirs[kind])
    items = [ReceiptInput.from_bytes(noise_jpeg(i, (80 + 30 * i, 150)), f"r{i}.jpg") for i in range(6)]
    results = backend.extract(items)
    assert [r.status for r in results] == ["ok"] * 6, [r.reason for r in results]
    assert all(r.extractor_version == f"hf:tiny/{kind}@test:v1+receipt-json" for r in results)


def test_grammar_settings_are_checked_and_versioned(pair):
    assert _spec("mllama", grammar="none").version == "hf:tiny/mllama@test:v1"
    assert _spec("mllama", prompt_mode="fields").decoding_grammar is None  # short answers are not JSON
    with pytest.raises(ConfigError, match="receipt-json"):
        resolve_spec({"preset": "ocr", "grammar": "receipt-json"})
    static = pair[0]
    inputs = static.batch_inputs([noise_image(1, (60, 60))], ["<|image|>total?"])
    with pytest.raises(ValueError, match="min_new_tokens"):  # a closed object allows only EOS
        static._generate(inputs, 8, min_new_tokens=4, grammar=static.grammar)


def test_refilled_constrained_batches_agree_with_generate(pair, monkeypatch):
    """Four receipts (one generate call) through two decode slots under the grammar: rows that finish hand their
    slot (and a fresh matcher) to a waiting receipt; the texts are still generate's."""
    static, generate = pair
    monkeypatch.setattr(static.engine, "max_batch", 2)
    monkeypatch.setattr(static.engine, "refill_check_every", 1)
    monkeypatch.setattr(static.engine, "refill_min_rows", 1)
    images = [noise_image(40 + i, (70, 150)) for i in range(4)]  # one tile count: one refill group
    a, b = static._forward(images), generate._forward(images)
    assert static.engine.stats.get("refilled_rows", 0) >= 1
    assert [str(x) for x in a] == [str(y) for y in b]
    for x, y in zip(a, b, strict=True):
        assert np.allclose([p for *_, p in x.token_spans], [p for *_, p in y.token_spans], atol=1e-5)
