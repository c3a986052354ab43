"""Receipt parser: reconstructed OCR lines -> the fields of the ``Receipt`` schema.

The parser finds candidates (date strings, amounts on TOTAL lines, header lines) by
rule; which candidate wins is decided by the learned line picker
(``extractor.ocr.picker``) when one is given, otherwise by the plain rules below (the
"naive" baseline that docs/ocr.md compares against).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from extractor import normalize
from extractor.errors import NormalizationError
from extractor.ocr import patterns
from extractor.ocr.items import extract_line_items
from extractor.ocr.layout import Line
from extractor.ocr.lexicon import correct_text


@dataclass
class Candidate:
    """A possible value of a field, where it was read, and the rule/model score."""

    value: Any
    line: int
    text: str
    score: float = 0.0
    ocr_score: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedFields:
    values: dict[str, Any] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)


# --- candidates ------------------------------------------------------------------
def _date_text(text: str) -> str:
    """A line made readable for the date patterns: a glued time split off, '~' read as '-'."""
    text = patterns.TIME_THEN_DATE_RE.sub(r"\1 \2", text.replace("~", "-"))
    return patterns.GLUED_TIME_RE.sub(r"\1 \2", text)


def _read_date(raw: str):
    """A printed date as a ``date`` in 1990-2035, else None ('14May/2017' reads too)."""
    text = patterns.re.sub(r"\s*([-/.])\s*", r"\1", raw)
    text = patterns.re.sub(r"(?<=\d)(?=[A-Za-z])|(?<=[A-Za-z])(?=\d)", " ", text)
    try:
        value = normalize.parse_date(text, day_first=True)
    except NormalizationError:
        return None
    return value if value is not None and 1990 <= value.year <= 2035 else None


def _strict_dates(text: str) -> list[tuple[str, Any, dict]]:
    """Dates as printed. The search restarts one character after a match that is not a
    date ("19- 18/01" in "REG#19- 18/01/2018"), so a false start cannot hide the real date."""
    out, pos, seen = [], 0, set()
    while (m := patterns.DATE_RE.search(text, pos)) is not None:
        pos = m.start() + 1
        value = _read_date(m.group(0))
        if value is not None and m.start() not in seen:
            seen.add(m.start())
            out.append((m.group(0), value, {}))
    return out


def _unseparated_dates(text: str) -> list[tuple[str, Any, dict]]:
    """'27032018' and '20180428' printed without separators."""
    out = []
    for m in patterns.COMPACT_DATE_RE.finditer(text):
        value = _read_date(f"{m.group(1)[:2]}/{m.group(1)[2:4]}/{m.group(1)[4:]}")
        if value is not None:
            out.append((m.group(1), value, {"compact": True}))
    for m in patterns.COMPACT_ISO_RE.finditer(text):
        value = _read_date(f"{m.group(1)}-{m.group(2)}-{m.group(3)}")
        if value is not None:
            out.append((m.group(0), value, {"compact": True}))
    return out


def _loose_dates(text: str) -> list[tuple[str, Any, dict]]:
    """Day, month and year with a misread separator, a missing one or digits glued on
    the left (these two only with a four-digit year)."""
    out, pos = [], 0
    while (m := patterns.LOOSE_DATE_RE.search(text, pos)) is not None:
        pos = m.start() + 1
        glued = m.start() > 0 and text[m.start() - 1].isdigit()
        unseparated = m.end(1) == m.start(2)
        if (glued or unseparated) and len(m.group(3)) != 4:
            continue
        value = _read_date(f"{m.group(1)}/{m.group(2)}/{m.group(3)}")
        if value is not None:
            out.append((m.group(0), value, {"loose": True}))
    return out


def date_candidates(lines: Sequence[Line]) -> list[Candidate]:
    """Every readable date on the page (one candidate per line and value, the most
    regular reading first)."""
    out = []
    for ln in lines:
        text, seen = _date_text(ln.text), set()
        for raw, value, extra in _strict_dates(text) + _unseparated_dates(text) + _loose_dates(text):
            if extra.get("loose") and value in seen:
                continue
            seen.add(value)
            out.append(Candidate(value=value, line=ln.index, text=raw, ocr_score=ln.score, extra=extra))
            # faded thermal print: the year's 8 read as 3 ("2013", "-13" on 2018 receipts); not
            # for 2023 on: a receipt printed then is far likelier than one from 2028
            if value.year % 10 == 3 and value.year < 2020:
                out.append(Candidate(value=value.replace(year=value.year + 5), line=ln.index, text=raw,
                                     ocr_score=ln.score, extra={**extra, "year_misread": True}))
    return out


def total_candidates(lines: Sequence[Line]) -> list[Candidate]:
    """Amounts on lines that name a total (or on the line just below such a label)."""
    out = []
    for i, ln in enumerate(lines):
        for j, amount in enumerate(patterns.amounts_in(ln.text)):
            label = ln.text
            if i > 0 and not patterns.TOTAL_WORDS_RE.search(ln.text):
                label = lines[i - 1].text + " | " + ln.text  # "TOTAL" printed above its amount
            out.append(Candidate(value=Decimal(amount), line=ln.index, text=label,
                                 ocr_score=ln.score, extra={"position_in_line": j,
                                                            "own_label": label == ln.text}))
        for amount in patterns.negative_totals_in(ln.text):  # a credit note's negative total
            out.append(Candidate(value=Decimal(amount), line=ln.index, text=ln.text, ocr_score=ln.score,
                                 extra={"position_in_line": 0, "own_label": True, "signed": True}))
        loose = patterns.loose_amount_in(ln.text)
        if loose is not None:  # "NET TOTAL 19-80": the point misread
            out.append(Candidate(value=Decimal(loose), line=ln.index, text=ln.text, ocr_score=ln.score,
                                 extra={"position_in_line": 0, "own_label": True, "loose": True}))
    return out


# --- naive rules -------------------------------------------------------------------
def naive_total(cands: Sequence[Candidate]) -> Candidate | None:
    scored = []
    for c in cands:
        own = c.text.split("|")[-1].upper()
        label = c.text.upper()
        if not patterns.TOTAL_WORDS_RE.search(label):
            continue
        if patterns.ADJUSTMENT_RE.search(own) and not patterns.re.search(r"TOTAL", own):
            continue  # "ROUNDING ADJ -0.01", "CASH 50.00", "CHANGE 0.00"
        if patterns.NOT_TOTAL_RE.search(own) and not patterns.ROUNDED_RE.search(own):
            continue
        c.score = 2.0 if patterns.ROUNDED_RE.search(label) else 1.0
        scored.append(c)
    if scored:
        # the last strong total line on the page (rounded / nett totals come last)
        return max(scored, key=lambda c: (c.score, c.line))
    return max(cands, key=lambda c: c.value, default=None)


def naive_date(cands: Sequence[Candidate], lines: Sequence[Line]) -> Candidate | None:
    for c in cands:
        text = lines[c.line].text.upper()
        if "DATE" in text or patterns.DATE_WORD_RE.search(text):
            return c
    return cands[0] if cands else None


def _is_noise(text: str) -> bool:
    letters = sum(ch.isalpha() for ch in text)
    return letters < 3 or patterns.REGISTRATION_RE.search(text) is not None


def naive_company(lines: Sequence[Line]) -> list[int]:
    head = [ln for ln in lines[:8] if not _is_noise(ln.text)]
    for ln in head:
        if any(s in ln.text.upper() for s in ("SDN BHD", "SDN. BHD", "BHD", "ENTERPRISE", "TRADING")):
            return [ln.index]
    return [head[0].index] if head else []


def naive_address(lines: Sequence[Line], company: list[int]) -> list[int]:
    start = (max(company) + 1) if company else 0
    picked: list[int] = []
    for ln in lines[start:start + 8]:
        text = ln.text.upper()
        if patterns.ADDRESS_STOP_RE.search(text) and not any(w in text for w in ("JALAN", "JLN", "LOT")):
            if picked:
                break
            continue
        if _is_noise(ln.text) and not patterns.POSTCODE_RE.search(text):
            if picked:
                continue
            continue
        picked.append(ln.index)
    return picked


# --- the other fields (rules are enough for them) ---------------------------------------
def find_time(lines: Sequence[Line]) -> str | None:
    for ln in lines:
        for m in patterns.TIME_RE.finditer(ln.text):
            try:
                return normalize.parse_time(m.group(0))
            except NormalizationError:
                continue
    return None


def find_phone(lines: Sequence[Line]) -> str | None:
    for ln in lines:
        m = patterns.PHONE_RE.search(ln.text)
        if m:
            return " ".join(m.group(1).split())
    return None


def find_receipt_number(lines: Sequence[Line]) -> str | None:
    for ln in lines:
        m = patterns.RECEIPT_NO_RE.search(ln.text)
        if m and any(ch.isdigit() for ch in m.group(1)):
            return m.group(1)
    return None


def find_labelled_amount(lines: Sequence[Line], label_re, exclude_re=None) -> Decimal | None:
    for ln in lines:
        if label_re.search(ln.text) and not (exclude_re and exclude_re.search(ln.text)):
            amounts = patterns.amounts_in(ln.text)
            if amounts:
                return Decimal(amounts[-1])
    return None


def find_currency(lines: Sequence[Line]) -> str | None:
    text = " ".join(ln.text.upper() for ln in lines)
    if "RM" in text.replace("(RM)", " RM ").split() or "(RM)" in text or "MYR" in text \
            or patterns.re.search(r"\bRM\s?\d", text):
        return "MYR"
    return None


def _span(lines: Sequence[Line], idx: list[int]) -> Candidate | None:
    if not idx:
        return None
    chosen = [lines[i] for i in sorted(idx)]
    return Candidate(value=" ".join(ln.text for ln in chosen), line=chosen[0].index,
                     text=" ".join(ln.text for ln in chosen), ocr_score=min(ln.score for ln in chosen),
                     extra={"lines": sorted(idx)})


# --- assembly --------------------------------------------------------------------------
def parse_receipt(lines: Sequence[Line], picker=None, reader=None, second_opinion=None) -> ParsedFields:
    """Fill the receipt fields from reconstructed lines.

    ``picker`` is a ``LinePicker`` (the shipped learned model); without one the naive
    rules pick the store name, address, date and total. With a ``reader`` (boxes ->
    new readings, ``extractor.ocr.second_opinion``) and its ``second_opinion`` settings,
    a doubtful store name or address is read again and picked from the mended lines."""
    out = ParsedFields()
    if not lines:
        return out
    dates = date_candidates(lines)
    totals = total_candidates(lines)
    if picker is not None:
        picks = picker.pick(lines, dates, totals)
        if reader is not None and second_opinion is not None:
            from extractor.ocr.second_opinion import second_opinion as reread

            picks = reread(lines, picks, lambda mended: picker.pick(mended, date_candidates(mended), []),
                           reader, second_opinion)
    else:
        company = naive_company(lines)
        picks = {"store_name": (_span(lines, company), 0.5),
                 "store_address": (_span(lines, naive_address(lines, company)), 0.5),
                 "date": (naive_date(dates, lines), 0.5), "total": (naive_total(totals), 0.5)}
    for name in ("store_name", "store_address", "date", "total"):
        cand, prob = picks[name]
        if cand is not None:
            out.values[name] = (correct_text(cand.value, store_name=name == "store_name")
                                 if name in ("store_name", "store_address") else cand.value)
            out.confidence[name] = round(prob * cand.ocr_score, 4)
    out.values["time"] = find_time(lines)
    out.values["phone"] = find_phone(lines)
    out.values["receipt_number"] = find_receipt_number(lines)
    out.values["subtotal"] = find_labelled_amount(lines, patterns.SUBTOTAL_RE)
    out.values["tax_amount"] = find_labelled_amount(lines, patterns.TAX_RE,
                                                    patterns.re.compile(r"REG|NO\b|ID\b|SUMMARY",
                                                                        patterns.re.I))
    out.values["currency"] = find_currency(lines)
    out.values["line_items"] = extract_line_items(lines, total=out.values.get("total"),
                                                  subtotal=out.values["subtotal"], tax=out.values["tax_amount"])
    return out
