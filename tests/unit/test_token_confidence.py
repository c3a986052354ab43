"""Per-field confidence of the ``hf`` backend: token probabilities -> field confidence.

Model level (tiny real Mllama / LLaVA, CPU): the static engine and ``generate`` give the
same tokens and the same per-token probabilities, so the same confidence; the backend's
outputs carry them. Rule level: the real tiny tokenizer spells a known JSON answer and the
probabilities of chosen tokens are forced (the only way to get a known low value from a
random-weight model), so the field, the rule (the minimum over the value's tokens) and the
routing to review are checked exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from extractor.backends.hf import HFBackend, receipt_from_answers
from extractor.backends.token_confidence import (
    ScoredText,
    answer_confidence,
    decode_scored,
    field_confidence,
    span_confidence,
    value_spans,
)
from extractor.images import ReceiptInput
from extractor.pipeline.quality.confidence import flag_low_confidence
from extractor.schema import ExtractionResult
from tests.unit.hf_inputs import engine_and_generate, noise_image, noise_jpeg, tiny_spec

pytestmark = pytest.mark.filterwarnings("ignore")


def _spec(kind, **overrides):
    return tiny_spec(kind, **{"grammar": "none", **overrides})


@pytest.fixture(scope="module")
def mllama_pair(tiny_mllama_dir):
    pytest.importorskip("extractor.engine.mllama")
    return engine_and_generate(tiny_mllama_dir, grammar="none")


def test_engine_and_generate_give_the_same_token_probabilities(mllama_pair):
    """Batched and left-padded (two tile counts, two prompt lengths): same tokens, same
    per-token log-probabilities, so the same spans and confidences downstream."""
    static, generate = mllama_pair
    assert (static.engine_name, generate.engine_name) == ("static", "generate")
    images = [noise_image(5, (60, 150)), noise_image(6, (90, 90)), noise_image(7, (150, 60))]
    texts = [static.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
        add_generation_prompt=True) for q in ("total?", "the store name, please?", "date")]
    import torch

    with torch.inference_mode():
        tok_s, lp_s = static._generate(static.batch_inputs(images, texts), 10, with_logprobs=True)
        tok_g, lp_g = generate._generate(generate.batch_inputs(images, texts), 10, with_logprobs=True)
    assert lp_s.dtype == lp_g.dtype == torch.float32
    n = min(tok_s.shape[1], tok_g.shape[1])
    assert torch.equal(tok_s[:, :n], tok_g[:, :n])
    assert torch.allclose(lp_s[:, :n], lp_g[:, :n], atol=1e-5)
    assert bool((lp_s[:, :n] < 0).all())  # a random model is never certain
    eos = static.generation_config.eos_token_id
    stop = eos if isinstance(eos, list) else [eos]
    for row in range(3):
        a = decode_scored(static.processor.tokenizer, tok_s[row].tolist(), lp_s[row].tolist(), stop_ids=stop)
        b = decode_scored(generate.processor.tokenizer, tok_g[row].tolist(), lp_g[row].tolist(), stop_ids=stop)
        assert str(a) == str(b) and len(a.token_spans) == len(b.token_spans) > 0
        assert [s[:2] for s in a.token_spans] == [s[:2] for s in b.token_spans]
        assert np.allclose([s[2] for s in a.token_spans], [s[2] for s in b.token_spans], atol=1e-5)


@pytest.mark.parametrize("kind", ["mllama", "llava"])
def test_backend_outputs_carry_token_spans_that_cover_the_text(tiny_model_dirs, kind):
    backend = HFBackend(_spec(kind), model_dir=tiny_model_dirs[kind])
    [text] = backend._forward([noise_image(3, (80, 120))])
    assert isinstance(text, ScoredText) and text.token_spans
    assert text.token_spans[0][0] == 0 and text.token_spans[-1][1] == len(text)
    assert all(0 < p <= 1 for _, _, p in text.token_spans)
    assert all(a[1] <= b[0] or a[:2] == b[:2] for a, b in zip(text.token_spans, text.token_spans[1:], strict=False))
    item = ReceiptInput.from_bytes(noise_jpeg(3, (80, 120)), "r.jpg")
    [result] = backend.extract([item])
    assert type(result.raw_text) is str  # audit text stays a plain string


ANSWER = ('```json\n{"store_name": "KEDAI Café 株式会社", "date": "2018-03-05", "total": "12.30",\n'
          ' "line_items": [{"name": "tea", "line_total": 9.99, "total": 1}], "currency": null}\n```')


def _forced(tokenizer, text: str, low: dict[str, float], default: float = 0.99) -> ScoredText:
    """``text`` spelled by the real tokenizer, every token given probability ``default``
    except those overlapping the named fields' values, which get ``low[field]``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = value_spans(text)
    offsets = decode_scored(tokenizer, ids, [0.0] * len(ids)).token_spans
    logprobs = []
    for s, e, _ in offsets:
        p = min([default] + [q for f, q in low.items() if s < spans[f][1] and e > spans[f][0]])
        logprobs.append(math.log(p))
    return decode_scored(tokenizer, ids + [tokenizer.eos_token_id, 7, 7], logprobs + [0.0, -9.0, -9.0],
                         stop_ids=[tokenizer.eos_token_id])


def test_decode_scored_spans_multibyte_text_and_stops_at_eos(mllama_pair):
    tokenizer = mllama_pair[1].processor.tokenizer
    text = _forced(tokenizer, ANSWER, {})
    assert str(text) == ANSWER  # cut at the EOS: what came after it is not text
    assert text.token_spans[-1][1] == len(ANSWER)
    covered = "".join(ANSWER[s:e] for i, (s, e, _) in enumerate(text.token_spans)
                      if i == 0 or text.token_spans[i - 1][:2] != (s, e))
    assert covered == ANSWER  # every character once, multi-byte ones included


def test_forced_low_probability_value_routes_the_receipt_to_review(mllama_pair):
    """The total's digits are forced to p=0.2, the date's to 0.6, the rest 0.99: the
    receipt's confidence says so field by field, and routing flags the total only."""
    backend = mllama_pair[1]
    raw = _forced(backend.processor.tokenizer, ANSWER, {"total": 0.2, "date": 0.6})
    receipt = backend._postprocess(raw)
    assert receipt.confidence["total"] == pytest.approx(0.2, abs=1e-6)
    assert receipt.confidence["date"] == pytest.approx(0.6, abs=1e-6)
    assert receipt.confidence["store_name"] == pytest.approx(0.99, abs=1e-6)
    assert set(receipt.confidence) == {"store_name", "date", "total"}  # null currency: no value, no score
    result = ExtractionResult(receipt_id="r1", source="r1.jpg", status="ok", receipt=receipt,
                              raw_text=str(raw), extractor_version=backend.version)
    [flagged] = flag_low_confidence([result], required_fields=["store_name", "date", "total"],
                                    min_confidence=0.5)
    assert flagged.review_reason == "low confidence (< 0.5): total 0.200"
    [kept] = flag_low_confidence([result], required_fields=["store_name", "date", "total"], min_confidence=0.1)
    assert kept.review_reason is None


def test_a_confidence_the_model_writes_itself_is_replaced(mllama_pair):
    backend = mllama_pair[1]
    raw = _forced(backend.processor.tokenizer, '{"total": "5.00", "confidence": {"total": 1.0}}', {"total": 0.3})
    assert backend._postprocess(raw).confidence == {"total": pytest.approx(0.3, abs=1e-6)}
    assert backend._postprocess('{"total": "5.00"}').confidence == {}  # no probabilities, no claim


def test_value_spans_are_top_level_and_tolerant():
    text = "Sure! {'store_name': 'A, B', \"total\": 12.5 , \"items\": [{\"total\": 3}], \"date\": \"2018-01-0"
    spans = value_spans(text)
    assert text[slice(*spans["store_name"])] == "A, B"
    assert text[slice(*spans["total"])] == "12.5"  # the top-level total, not the item's
    assert text[slice(*spans["date"])] == "2018-01-0"  # unterminated: up to the end
    assert text[slice(*spans["items"])] == '[{"total": 3}]'
    assert value_spans("no json here") == {}
    empty = '{"phone": ""}'
    tokens = ((0, 10, 0.9), (10, 12, 0.4), (12, 13, 0.95))  # '{"phone": ' '""' '}'
    assert span_confidence(tokens, *value_spans(empty)["phone"]) == 0.4


def test_field_mode_answers_carry_their_own_confidence():
    answers = {"store_name": ScoredText("ACME", [(0, 2, 0.9), (2, 4, 0.7)]),
               "total": ScoredText(" RM 12.30\n", [(0, 3, 0.99), (3, 9, 0.45), (9, 10, 0.01)]),
               "date": "2018-01-05"}
    receipt = receipt_from_answers(answers)
    assert receipt.confidence == {"store_name": 0.7, "total": 0.45}  # the newline's 0.01 is not a value
    assert answer_confidence(ScoredText("  ", [(0, 2, 0.1)])) is None
    assert field_confidence(ScoredText('{"total": 1}', [(0, 12, 0.8)]), ["total", "date"]) == {"total": 0.8}
