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
    first_truncated: dict[str, Any] | None = None
    for chunk in candidates:
        for start in (m.start() for m in re.finditer(r"\{", chunk)):
            parser = _Parser(chunk, start)
            try:
                value = parser.value()
            except _Invalid:
                continue
            if not isinstance(value, dict):
                continue
            if not parser.truncated:
                return value
            # A truncated object ran to the end of the chunk, so every later "{" is
            # inside it. Keep it in case nothing complete turns up (a fence can be cut
            # short by backticks inside a string: the whole text is tried too).
            if first_truncated is None:
                first_truncated = value
            break
    if first_truncated:
        return first_truncated
    if first_truncated is not None:
        raise ParseError("model output was cut off before its first complete field "
                         "(max_new_tokens too small?)", raw_text=text)
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
        if ch in "-+." and self.pos + 1 >= len(self.text):
            raise _Truncated()  # a sign or point the output stopped after
        m = _BARE_KEY.match(self.text, self.pos)
        if m and m.end() >= len(self.text) and m.group(0).lower() not in _LITERALS:
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
                out.append(self._escape())
                continue
            if ch == "\\":
                break  # a lone backslash at the very end: truncated
            if ch == quote:
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise _Truncated()

    _HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}  # JSON \uXXXX, Python \xXX and \UXXXXXXXX

    def _escape(self) -> str:
        esc = self.text[self.pos + 1]
        width = self._HEX_ESCAPES.get(esc)
        digits = self.text[self.pos + 2:self.pos + 2 + width] if width else ""
        if width and re.fullmatch(r"[0-9a-fA-F]+", digits) and len(digits) == width:
            self.pos += 2 + width
            code = int(digits, 16)
            # a UTF-16 surrogate pair (JSON's way to write characters beyond U+FFFF)
            if 0xD800 <= code < 0xDC00 and self.text.startswith("\\u", self.pos):
                low = self.text[self.pos + 2:self.pos + 6]
                if re.fullmatch(r"[0-9a-fA-F]{4}", low) and 0xDC00 <= int(low, 16) < 0xE000:
                    self.pos += 6
                    code = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
            return chr(code) if code <= 0x10FFFF else "\ufffd"
        if width and len(digits) < width and self.pos + 2 + len(digits) >= len(self.text):
            raise _Truncated()  # cut inside the escape
        self.pos += 2
        return {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0"}.get(esc, esc)

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
