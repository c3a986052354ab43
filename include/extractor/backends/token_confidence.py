"""Per-field confidence for generative backends, from the probabilities of the tokens that
spell each value.

The rule: a field's confidence is the **lowest probability among the tokens that spell its
value** (the tokens whose characters overlap the value's characters in the decoded text;
for a quoted string, its content; for an empty string, its quotes). Greedy decoding picks
the most likely token each step, so that probability is the model's top-1 probability at
that step: a value is as sure as its least sure token. The minimum, not a mean, because one
doubtful digit makes a total wrong however sure the other digits were. JSON keys, quotes
and punctuation outside the value do not count, so a model that is sure of the format but
not of the amount gets a low ``total``.

``ScoredText`` is the decoded text of one generation that carries, per token, its
character span and probability; ``field_confidence`` maps it to ``{field: confidence}``
for the top-level keys of the JSON object in it; ``answer_confidence`` scores a whole
short answer (the field-per-question prompt mode).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

TokenSpan = tuple[int, int, float]  # (start, end) characters in the text, probability


class ScoredText(str):
    """Decoded model text with ``token_spans``: (start, end, probability) per generated
    token, in order, over this string's characters (special tokens have no span)."""

    token_spans: tuple[TokenSpan, ...]

    def __new__(cls, text: str, token_spans: Iterable[TokenSpan] = ()):
        obj = super().__new__(cls, text)
        obj.token_spans = tuple(token_spans)
        return obj

    def __reduce__(self):
        return ScoredText, (str(self), self.token_spans)


def decode_scored(tokenizer, ids: Sequence[int], logprobs: Sequence[float], *,
                  stop_ids: Iterable[int] = ()) -> ScoredText:
    """Decode one row of generated ``ids`` (skipping special tokens, as ``batch_decode``
    does with ``skip_special_tokens=True``) and attach each token's span and probability.

    The row is cut at its first stop (EOS) token. Pieces are decoded token by token; a
    token that ends inside a multi-byte character (it decodes to U+FFFD) is joined with the
    next ones until the character is whole, and they share the span. Tokenizers whose
    pieces do not concatenate to the whole text (SentencePiece drops a leading space when a
    token is decoded alone) fall back to decoding growing prefixes."""
    ids, logprobs = _cut_at_stop(list(ids), list(logprobs), set(stop_ids))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    keep = [(int(t), float(lp)) for t, lp in zip(ids, logprobs, strict=True) if int(t) not in special]
    text = tokenizer.decode([t for t, _ in keep], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    spans = _piecewise_spans(tokenizer, keep, len(text))
    if spans is None:
        spans = _prefix_spans(tokenizer, keep, len(text))
    return ScoredText(text, spans)


def _cut_at_stop(ids: list[int], logprobs: list[float], stop: set[int]):
    for i, tok in enumerate(ids):
        if tok in stop:
            return ids[:i], logprobs[:i]
    return ids, logprobs


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _piecewise_spans(tokenizer, keep: list[tuple[int, float]], text_len: int) -> list[TokenSpan] | None:
    spans: list[TokenSpan] = []
    pending: list[tuple[int, float]] = []
    pos = 0
    for n, item in enumerate(keep):
        pending.append(item)
        piece = _decode(tokenizer, [t for t, _ in pending])
        if piece.endswith("\ufffd") and n + 1 < len(keep):
            continue  # a character split over tokens: wait for its last byte
        spans.extend((pos, pos + len(piece), math.exp(lp)) for _, lp in pending)
        pos += len(piece)
        pending = []
    return spans if pos == text_len else None


def _prefix_spans(tokenizer, keep: list[tuple[int, float]], text_len: int) -> list[TokenSpan]:
    spans: list[TokenSpan] = []
    prev = 0
    for n in range(1, len(keep) + 1):
        cur = min(len(_decode(tokenizer, [t for t, _ in keep[:n]])), text_len)
        spans.append((prev, max(prev, cur), math.exp(keep[n - 1][1])))
        prev = max(prev, cur)
    return spans


def value_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character spans of the values of the first JSON object's top-level keys in ``text``
    (a quoted value's span is its content). Tolerant of what models write around and
    inside the object: text before it, single quotes, an unterminated end. The first
    occurrence of a key wins."""
    start = text.find("{")
    if start < 0:
        return {}
    spans: dict[str, tuple[int, int]] = {}
    i, n = start + 1, len(text)
    while i < n:
        i = _skip_space_and_commas(text, i)
        if i >= n or text[i] == "}":
            break
        key, i = _read_key(text, i)
        i = _skip_space(text, i)
        if i >= n or text[i] != ":":
            break
        i = _skip_space(text, i + 1)
        vstart, vend, i = _read_value(text, i)
        if key is not None and key not in spans:
            spans[key] = (vstart, vend)
    return spans


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _skip_space_and_commas(text: str, i: int) -> int:
    while i < len(text) and (text[i].isspace() or text[i] == ","):
        i += 1
    return i


def _read_string(text: str, i: int) -> tuple[int, int, int]:
    """``text[i]`` is a quote: (content start, content end, index after the closing quote)."""
    quote, j = text[i], i + 1
    while j < len(text) and text[j] != quote:
        j += 2 if text[j] == "\\" else 1
    end = min(j, len(text))
    return i + 1, end, end + 1


def _read_key(text: str, i: int) -> tuple[str | None, int]:
    if text[i] in "\"'":
        s, e, after = _read_string(text, i)
        return text[s:e], after
    j = i
    while j < len(text) and (text[j].isalnum() or text[j] == "_"):
        j += 1
    return (text[i:j] or None), max(j, i + 1)


def _read_value(text: str, i: int) -> tuple[int, int, int]:
    """(value start, value end, index after the value) for a string, number, literal or a
    nested array/object (skipped whole, brackets balanced, strings respected)."""
    if i < len(text) and text[i] in "\"'":
        return _read_string(text, i)
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch in "\"'" and depth:
            j = _read_string(text, j)[2]
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            if depth == 0:
                break
            depth -= 1
        elif ch in ",\n" and depth == 0:
            break
        j += 1
    end = j
    while end > i and text[end - 1].isspace():
        end -= 1
    return i, end, j


def span_confidence(token_spans: Sequence[TokenSpan], start: int, end: int) -> float | None:
    """The lowest probability among tokens overlapping characters [start, end); an empty
    span takes the tokens that touch it (the quotes of ``""``). None when no token does."""
    lo, hi = (start, end) if end > start else (start - 1, start + 1)
    probs = [p for s, e, p in token_spans if s < hi and e > lo and e > s]
    return min(probs) if probs else None


def field_confidence(text: ScoredText, fields: Iterable[str]) -> dict[str, float]:
    """``{field: confidence}`` for each of ``fields`` that is a top-level key of the JSON
    object in ``text`` (see the module docstring for the rule)."""
    spans = value_spans(text)
    out: dict[str, float] = {}
    for name in fields:
        if name in spans:
            conf = span_confidence(text.token_spans, *spans[name])
            if conf is not None:
                out[name] = round(conf, 6)
    return out


def answer_confidence(text: ScoredText) -> float | None:
    """A short answer's confidence: the lowest probability among its tokens that carry
    visible characters (surrounding whitespace and newlines do not count)."""
    probs = [p for s, e, p in text.token_spans if text[s:e].strip()]
    return round(min(probs), 6) if probs else None
