"""Schema-constrained decoding for the ``hf`` backend: the model can only write a JSON
object of the ``Receipt`` shape, and every output closes within ``max_new_tokens``.

The grammar is xgrammar's (pinned in requirements.txt) compiled from
``receipt_output_schema()``: the prompt's keys in the prompt's order, each optional, every
scalar a string or null (amounts, dates, times, currency codes typed by pattern or enum so
what passes the grammar passes the parser; free text bounded in length), ``line_items`` a
bounded list of bounded items. Each decode step, a ``GrammarBatch`` fills one packed bitmask
row per receipt (bit set = token allowed) from its matcher, and the decoder (``generate``
through ``GrammarLogitsProcessor``, or the static engine on the device) sets the other
tokens' logits to -inf before the greedy choice; the chosen token then advances the
matcher. Both decode ways call the same ``GrammarBatch`` code, so they choose alike.

Closing within the budget: bounds alone cannot promise it (a token may carry one
character or one byte of one). So during the last ``reserve`` steps a row is steered to
the shortest way out: inside a string only a closing quote (when the grammar allows one),
outside strings only tokens made of ``]`` / ``}`` (close what is open), else only tokens
made of ``"`` / ``]`` / ``}`` (an empty string where a value must come), else whatever the
grammar forces (the rest of a key, of a multi-byte character, of an escape). ``reserve`` is
the longest such forced run plus the closing characters, so an ASCII key or value in
progress always has room to finish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from extractor.errors import ConfigError
from extractor.schema import MONEY_FIELDS, LineItem, scalar_fields

log = logging.getLogger(__name__)

XGRAMMAR_VERSION = "0.2.8"
GRAMMAR_NAME = "receipt-json"  # named in the extractor version: constrained output is other output

# Bounds, in characters. Generous for printed receipts; they keep a runaway value short.
_TEXT_LIMITS = {"store_name": 120, "store_address": 240, "phone": 40, "payment_method": 40,
                "receipt_number": 48}
_ITEM_NAME_LIMIT = 120
_MAX_ITEMS = 60
# Typed fields are written as the prompt asks, so each value the grammar lets through is one
# the parser reads: an amount, a calendar date (only 29 February of a common year passes the
# pattern and fails the parser), a 24-hour time, an ISO 4217 code.
_AMOUNT = r"^-?[0-9]{1,9}([.][0-9]{1,4})?$"
_DATE = (r"^(19|20)[0-9]{2}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
         r"|02-(0[1-9]|1[0-9]|2[0-9]))$")
_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _field_schema(name: str) -> dict[str, Any]:
    from extractor.normalize import ISO_4217

    if name in MONEY_FIELDS or name == "tax_rate":
        return _nullable({"type": "string", "pattern": _AMOUNT})
    if name == "date":
        return _nullable({"type": "string", "pattern": _DATE})
    if name == "time":
        return _nullable({"type": "string", "pattern": _TIME})
    if name == "currency":
        return _nullable({"type": "string", "enum": sorted(ISO_4217)})
    if name == "card_last4":
        return _nullable({"type": "string", "pattern": r"^[0-9]{4}$"})
    return _nullable({"type": "string", "maxLength": _TEXT_LIMITS.get(name, 48)})


def receipt_output_schema() -> dict[str, Any]:
    """The JSON schema the model's output must follow (the prompt's shape, bounded and typed)."""
    amount = _nullable({"type": "string", "pattern": _AMOUNT})
    item_props = {name: (amount if name != "name" else {"type": "string", "maxLength": _ITEM_NAME_LIMIT})
                  for name in LineItem.model_fields}
    props: dict[str, Any] = {name: _field_schema(name) for name in scalar_fields()}
    props["line_items"] = {"type": "array", "maxItems": _MAX_ITEMS,
                           "items": {"type": "object", "properties": item_props, "required": ["name"],
                                     "additionalProperties": False}}
    return {"type": "object", "properties": props, "additionalProperties": False}


def _import_xgrammar():
    try:
        import xgrammar
    except ImportError as exc:
        raise ConfigError(f"schema-constrained decoding needs xgrammar=={XGRAMMAR_VERSION} "
                          f"(pip install xgrammar=={XGRAMMAR_VERSION}), or set grammar: none ({exc})") from exc
    return xgrammar


class ReceiptGrammar:
    """The compiled receipt grammar for one tokenizer and vocabulary (built once per backend).

    ``vocab_size`` is the model's logits width (it may exceed the tokenizer's length).
    """

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        import json

        import numpy as np

        xgr = _import_xgrammar()
        self._xgr = xgr
        self.vocab_size = vocab_size
        self.stop_ids = list(stop_ids)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=self.stop_ids)
        compiler = xgr.GrammarCompiler(info, max_threads=2)
        self.compiled = compiler.compile_json_schema(json.dumps(receipt_output_schema()), any_whitespace=False,
                                                     strict_mode=True)
        texts = _token_texts(tokenizer, vocab_size)
        self.texts = texts
        words = (vocab_size + 31) // 32
        self.close_brackets = _pack(np, [bool(t) and set(t) <= set("]}") for t in texts], words)
        self.close_any = _pack(np, [bool(t) and set(t) <= set('"]}') for t in texts], words)
        self.close_string = _pack(np, [t.startswith('"') and set(t[1:]) <= set("]}") for t in texts], words)
        longest_key = max(len(k) for k in receipt_output_schema()["properties"])
        # a key in progress (+ quotes, colon), an empty value, '}]}' and an escape or a
        # multi-byte character to finish: the longest run the grammar can force, plus margin
        self.reserve = longest_key + 3 + 2 + 4 + 6 + 4

    def new_batch(self, rows: int, max_new_tokens: int) -> GrammarBatch:
        return GrammarBatch(self, rows, max_new_tokens)


def _token_texts(tokenizer, vocab_size: int) -> list[str]:
    """Each token id's own text ('' for special and out-of-tokenizer ids)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    n = min(vocab_size, len(tokenizer))
    texts = [("" if i in special else tokenizer.decode([i], clean_up_tokenization_spaces=False))
             for i in range(n)]
    return texts + [""] * (vocab_size - n)


def _pack(np, flags: list[bool], words: int):
    """Booleans -> xgrammar's packed int32 bitmask layout (bit j of word i = token 32*i + j)."""
    bits = np.zeros(words * 32, dtype=np.uint64)
    bits[:len(flags)] = flags
    packed = (bits.reshape(words, 32) << np.arange(32, dtype=np.uint64)).sum(axis=1)
    return packed.astype(np.uint32).view(np.int32)


@dataclass
class _RowState:
    in_string: bool = False
    escaped: bool = False
    done: bool = False  # accepted a stop token, or left the grammar


class GrammarBatch:
    """The grammar state of one batch of rows being decoded together (a row may be reset
    when a new receipt takes its place in a continuously refilled batch)."""

    def __init__(self, grammar: ReceiptGrammar, rows: int, max_new_tokens: int):
        self.grammar = grammar
        self.max_new = max_new_tokens
        self.matchers = [self._matcher() for _ in range(rows)]
        self.rows = [_RowState() for _ in range(rows)]
        self.steps = [0] * rows  # tokens each row has written
        self.bitmask = grammar._xgr.allocate_token_bitmask(rows, grammar.vocab_size)  # CPU int32 [rows, words]
        self.left_grammar = 0

    def _matcher(self):
        g = self.grammar
        return g._xgr.GrammarMatcher(g.compiled, override_stop_tokens=g.stop_ids)

    def reset_rows(self, rows: list[int]) -> None:
        """Fresh state for rows that a new receipt takes over."""
        for i in rows:
            self.matchers[i] = self._matcher()
            self.rows[i] = _RowState()
            self.steps[i] = 0

    def fill(self):
        """The packed bitmask of what each row may write at its current step (all bits set
        for rows that are done). A CPU int32 tensor [rows, words], reused between steps."""
        for i in range(len(self.rows)):
            self._fill_row(i)
        return self.bitmask

    def fill_rows(self, rows: list[int]):
        """Only these rows' masks (a new tensor [len(rows), words])."""
        for i in rows:
            self._fill_row(i)
        return self.bitmask[rows].clone()

    def _fill_row(self, i: int) -> None:
        import numpy as np

        g, mask, row = self.grammar, self.bitmask.numpy(), self.rows[i]
        if row.done:
            mask[i] = -1
            return
        self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        if self.max_new - self.steps[i] <= g.reserve:
            options = (g.close_string,) if row.in_string else (g.close_brackets, g.close_any)
            for allowed in options:
                narrowed = np.bitwise_and(mask[i], allowed)
                if narrowed.any():
                    mask[i] = narrowed
                    break

    def all_done(self) -> bool:
        return all(row.done for row in self.rows)

    def advance(self, tokens) -> None:
        """Feed each row's chosen token to its matcher (``tokens``: ints, one per row)."""
        for i, token in enumerate(tokens):
            row = self.rows[i]
            if row.done:
                continue
            token = int(token)
            self.steps[i] += 1
            if not self.matchers[i].accept_token(token):
                # cannot happen while the mask is applied; if it does, the row is left
                # unconstrained and its output is judged by the parser like any other
                log.warning("grammar rejected token %d; row left unconstrained", token)
                row.done = True
                self.left_grammar += 1
                continue
            if self.matchers[i].is_terminated() or token in self.grammar.stop_ids:
                row.done = True
                continue
            self._track_string(row, self.grammar.texts[token])

    @staticmethod
    def _track_string(row: _RowState, text: str) -> None:
        for ch in text:
            if row.escaped:
                row.escaped = False
            elif ch == "\\" and row.in_string:
                row.escaped = True
            elif ch == '"':
                row.in_string = not row.in_string


def apply_bitmask(logits, bitmask) -> None:
    """Set the logits of tokens whose bit is 0 to -inf, in place (any device; torch only,
    so a CUDA graph can capture it). ``bitmask``: int32 [B, words] on ``logits``' device."""
    import torch

    shifts = torch.arange(32, device=bitmask.device, dtype=torch.int32)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    allowed = bits.reshape(bitmask.shape[0], -1)[:, :logits.shape[-1]].bool()
    logits.masked_fill_(~allowed, float("-inf"))


def grammar_logits_processor(batch: GrammarBatch):
    """A transformers logits processor that applies ``batch``'s mask at every generate step
    (placed after generate's own processors, before the token scorer)."""
    from transformers import LogitsProcessor

    class GrammarLogitsProcessor(LogitsProcessor):
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores):
            if self.calls:
                batch.advance(input_ids[:, -1].tolist())
            self.calls += 1
            apply_bitmask(scores, batch.fill().to(scores.device, non_blocking=True))
            return scores

    return GrammarLogitsProcessor()
