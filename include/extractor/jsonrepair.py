"""Getting one JSON object out of what a language model actually wrote.

Models wrap JSON in code fences, add a sentence before and after, write Python
(``None``, ``True``, single quotes), leave trailing commas, and stop mid-object when
``max_new_tokens`` runs out. ``extract_json`` reads all of that with a small tolerant
parser (not a chain of regex substitutions, which break on quotes inside strings).

Truncated output: open objects and arrays are closed and every member that was
complete is kept; the value that was being written when the output stopped is
dropped, because a cut value ("12.3" of "12.34", "SANYU STAT") is wrong in a way that
later checks cannot see, while a missing value is visible.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from extractor.errors import ParseError

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|js|javascript|python)?[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_LITERALS = {"true": True, "false": False, "null": None, "none": None, "nan": None,
             "undefined": None}
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PLACEHOLDERS = {"", "n/a", "na", "none", "null", "nil", "-", "--", "unknown", "not found",
                 "not available", "not applicable", "not visible", "not present"}


class _Truncated(Exception):
    """The text ended inside a value."""


class _Invalid(Exception):
    """Not JSON-like at this position."""


def extract_json(text: str | None) -> dict[str, Any]:
    """The first JSON object in ``text``, repaired; ``ParseError`` (with the raw text) if none.

    Fenced blocks are tried first, then the whole text; within each, the first ``{``
    that starts a readable object wins (several objects: the first complete one).
    """
    if text is None or not text.strip():
        raise ParseError("empty model output", raw_text=text)
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for chunk in candidates:
        for start in (m.start() for m in re.finditer(r"\{", chunk)):
            parser = _Parser(chunk, start)
            try:
                value = parser.value()
            except _Invalid:
                continue
            # A truncated object ran to the end of the text, so every later "{" is
            # inside it: it is the first (and only) candidate of this chunk.
            if isinstance(value, dict):
                return value
    raise ParseError("no JSON object in model output", raw_text=text)


def drop_placeholders(obj: Any) -> Any:
    """Replace the ways models say "absent" ("N/A", "", "null", "not found") with None."""
    if isinstance(obj, dict):
        return {k: drop_placeholders(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [drop_placeholders(v) for v in obj]
    if isinstance(obj, str) and obj.strip().lower().rstrip(".") in _PLACEHOLDERS:
        return None
    return obj


class _Parser:
    """A forgiving recursive-descent JSON reader starting at ``pos``."""

    def __init__(self, text: str, pos: int):
        self.text, self.pos, self.truncated = text, pos, False

    # -- helpers ----------------------------------------------------------------
    def _ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def _peek(self) -> str:
        self._ws()
        if self.pos >= len(self.text):
            raise _Truncated()
        return self.text[self.pos]

    # -- grammar ----------------------------------------------------------------
    def value(self) -> Any:
        try:
            return self._value()
        except _Truncated:  # truncated inside a top-level scalar
            raise _Invalid() from None

    def _value(self) -> Any:
        ch = self._peek()
        if ch in "{[":
            return self._container(ch)
        if ch in "\"'":
            return self._string()
        m = _NUMBER.match(self.text, self.pos)
        if m:
            return self._number(m)
        m = _BARE_KEY.match(self.text, self.pos)
        if m and m.end() >= len(self.text):
            raise _Truncated()  # 'nul' of a cut 'null'
        if m and m.group(0).lower() in _LITERALS:
            self.pos = m.end()
            return _LITERALS[m.group(0).lower()]
        raise _Invalid()

    def _number(self, m: re.Match) -> Any:
        end = m.end()
        if end >= len(self.text):
            raise _Truncated()  # '12.3' may be the start of '12.34'
        if self.text[end] not in " \t\r\n,}]":
            raise _Invalid()
        self.pos = end
        raw = m.group(0).lstrip("+")
        # Decimal keeps the printed value: a float would turn 0.1 into 0.1000000000000000055.
        return Decimal(raw) if any(c in raw for c in ".eE") else int(raw)

    def _string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                esc = self.text[self.pos + 1]
                if esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", self.text[self.pos + 2:self.pos + 6]):
                    out.append(chr(int(self.text[self.pos + 2:self.pos + 6], 16)))
                    self.pos += 6
                    continue
                out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(esc, esc))
                self.pos += 2
                continue
            if ch == "\\":
                break  # a lone backslash at the very end: truncated
            if ch == quote:
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise _Truncated()

    def _key(self) -> str:
        ch = self._peek()
        if ch in "\"'":
            return self._string()
        m = _BARE_KEY.match(self.text, self.pos)
        if not m:
            raise _Invalid()
        if m.end() >= len(self.text):
            raise _Truncated()
        self.pos = m.end()
        return m.group(0)

    def _container(self, open_: str) -> Any:
        """An object or array; on truncation, its complete members, closed.

        A nested object cut short is dropped by its parent (a line item without its
        amounts is a cut value); arrays keep their complete elements.
        """
        self.pos += 1
        is_obj, close = open_ == "{", "}" if open_ == "{" else "]"
        result: Any = {} if is_obj else []
        expect_item = True
        while True:
            try:
                ch = self._peek()
            except _Truncated:
                self.truncated = True
                return result
            if ch == close:
                self.pos += 1
                return result
            if ch == ",":
                self.pos += 1
                expect_item = True
                continue
            if not expect_item and ch not in "\"'{[" and not _BARE_KEY.match(self.text, self.pos):
                raise _Invalid()
            try:
                key = None
                if is_obj:
                    key = self._key()
                    if self._peek() not in ":=":
                        raise _Invalid()
                    self.pos += 1
                item = self._value()
            except _Truncated:
                self.truncated = True
                return result
            if not (self.truncated and isinstance(item, dict)):
                if is_obj:
                    result[key] = item
                else:
                    result.append(item)
            if self.truncated:  # a nested container ran to the end of the text
                return result
            expect_item = False  # a missing comma is tolerated if the next item starts cleanly


def loads_strict_or_repair(text: str) -> dict[str, Any]:
    """``json.loads`` when the text is exactly one object, else ``extract_json``."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return extract_json(text)
    if isinstance(value, dict):
        return value
    return extract_json(text)
