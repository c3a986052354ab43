"""Line items that the receipt's own arithmetic proves.

Item lines are read upwards from the first subtotal / total line: every line above it
that carries an amount is an item whose line total is the last amount printed on it,
until the running sum equals the receipt's subtotal, its total or its total less tax
(within ``TOLERANCE``: cash totals are rounded to 5 sen). If no run of lines adds up, the
receipt gets no items at all: a partial or wrong list would pass for a real one, and the
pipeline's ``check_line_items_sum`` would quarantine the whole receipt.

Quantity and unit price are filled only when the line shows them and they multiply to
the line total ("2 X 3.50  7.00", "2 3.50 7.00"); the description is the line's own
text, or the text line just above when the amount line has none (names printed over
their numbers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

from extractor.ocr import patterns
from extractor.ocr.layout import Line

TOLERANCE = Decimal("0.02")  # a 5-sen rounding adjustment is at most 2 sen
MAX_ITEM_LINES = 80
# Lines that close the item block from below (the first one with an amount ends it).
_END_RE = re.compile(r"SUB\s?-?\s?TOTAL|T\s?O\s?T\s?A\s?L|JUMLAH|GRAND|NETT|AMOUNT DUE|AMT DUE",
                     re.IGNORECASE)
_QTY_LINE_RE = re.compile(r"TOTAL\s*(QTY|QUANTITY|ITEM|PCS)|ITEM\(S\)|QTY\s*:", re.IGNORECASE)
# Lines with an amount that are not items (payment, tax, adjustments, header details).
_NOT_ITEM_RE = re.compile(r"\b(GST|SST|TAX|VAT|CASH|TUNAI|CHANGE|BAKI|TENDER(?:ED)?|PAID|PAYMENT|"
                          r"ROUNDING|ROUNDED|ADJ|BALANCE|DEPOSIT|VISA|MASTER|CARD|SERVICE|SVC|SRV|CHARGE|"
                          r"SUB|TOTAL|TTL|JUMLAH|QTY|QUANTITY)\b", re.IGNORECASE)
# The header above the items: once the walk reaches one of these lines it stops.
_HEADER_RE = re.compile(r"\b(DATE|TARIKH|TIME|CASHIER|INVOICE|RECEIPT|BILL\s*NO|TABLE|COUNTER|"
                        r"TERMINAL|POS|TEL|FAX)\b|\b(QTY|QUANTITY)\b.*\b(PRICE|AMOUNT|AMT|RM)\b|"
                        r"\bDESC(RIPTION)?\b|\bITEM\s*(NAME|DESC|QTY)", re.IGNORECASE)
_QTY_X_PRICE = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3})?)\s*(?:X|\*|@)\s*(?:RM\s?)?"
                          r"(\d{1,3}(?:,\d{3})*[.,]\d{2})(?!\d)", re.IGNORECASE)
_LEADING_QTY = re.compile(r"(?<![\d.,])(\d{1,3}(?:\.\d{1,3})?)\s+(?:RM\s?)?\d+[.,]\d{2}\b")
_NUMBERS = re.compile(r"(?:\bRM\s?)?(?<![\w.,])-?\d+(?:[.,]\d+)*(?![\w.,])|\s[@X*]\s|\b(?:SR|ZR|TX|S|Z|T|E)\b\s*$",
                      re.IGNORECASE)


def _amount_of(text: str) -> Decimal | None:
    """The line total: the last amount on the line, negative when printed with a minus."""
    matches = list(patterns.AMOUNT_RE.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    value = Decimal(f"{int(m.group(1).replace(',', ''))}.{m.group(2)}")
    before = text[:m.start(1)].rstrip().removesuffix("RM").rstrip()
    negative = m.group(0).lstrip().startswith("-") or before.endswith("-") or text.rstrip().endswith("-")
    return -value if negative else value


def _quantity_price(text: str, line_total: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """(quantity, unit price) when the line prints them and they multiply to the total."""
    found = [(m.group(1), m.group(2)) for m in _QTY_X_PRICE.finditer(text)]
    found += [(m.group(1), a) for m in _LEADING_QTY.finditer(text)
              for a in patterns.amounts_in(text[m.start():])[:1]]
    for qty_text, price_text in found:
        qty, price = Decimal(qty_text), Decimal(patterns.amounts_in(price_text)[0])
        if qty > 0 and abs(qty * price - abs(line_total)) <= Decimal("0.01"):
            return qty, price
    return None, None


def _description(text: str) -> str:
    return " ".join(_NUMBERS.sub(" ", text).split()).strip(" :-")


def _is_text_line(ln: Line) -> bool:
    return sum(ch.isalpha() for ch in ln.text) >= 3 and not patterns.amounts_in(ln.text)


def _end_line(lines: Sequence[Line]) -> int | None:
    """The first subtotal / total / total-quantity line below the first amount."""
    seen_amount = False
    for ln in lines:
        if seen_amount and (_END_RE.search(ln.text) or _QTY_LINE_RE.search(ln.text)):
            return ln.index
        seen_amount = seen_amount or bool(patterns.amounts_in(ln.text))
    return None


def _names_below(lines: Sequence[Line], found: list[tuple[int, Decimal]]) -> bool:
    """Whether this receipt prints each name under its numbers: the line above the first
    item is no text line (a column header such as "(RM)"), the one below it is."""
    first = found[0][0]
    above_is_name = first > 0 and _is_text_line(lines[first - 1]) and not _HEADER_RE.search(lines[first - 1].text)
    return not above_is_name and first + 1 < len(lines) and _is_text_line(lines[first + 1])


def _item(lines: Sequence[Line], k: int, amount: Decimal, used: set[int], below: bool) -> dict:
    text = lines[k].text
    name = _description(text)
    if sum(ch.isalpha() for ch in name) < 3:  # the name has a line of its own
        near = range(k + 1, min(len(lines), k + 3)) if below else range(k - 1, max(-1, k - 3), -1)
        other = next((j for j in near if _is_text_line(lines[j]) and j not in used
                      and not _HEADER_RE.search(lines[j].text)), None)
        if other is not None:
            used.add(other)
            name = _description(lines[other].text)
    qty, price = _quantity_price(text, amount)
    return {"name": name, "quantity": qty, "unit_price": price, "line_total": amount}


def _targets(total: Decimal | None, subtotal: Decimal | None, tax: Decimal | None) -> list[Decimal]:
    out = [v for v in (subtotal, total) if v is not None and v > 0]
    if total is not None and tax:
        out.append(total - tax)
    return out


def _item_lines(lines: Sequence[Line], end: int, targets: Sequence[Decimal]) -> list[tuple[int, Decimal]]:
    """(line, amount) of the item lines above ``end``, top to bottom, once their running
    sum meets a target; [] when the header is reached first."""
    running, found = Decimal(0), []
    for k in range(end - 1, max(-1, end - 1 - MAX_ITEM_LINES), -1):
        text = lines[k].text
        if _HEADER_RE.search(text) or patterns.DATE_RE.search(text):
            return []  # the receipt's header: the items are all below it
        amount = _amount_of(text)
        if not amount or _NOT_ITEM_RE.search(text) or patterns.TIME_RE.search(text):
            continue
        running += amount
        found.append((k, amount))
        if any(abs(running - t) <= TOLERANCE for t in targets):
            return found[::-1]
    return []


def extract_line_items(lines: Sequence[Line], *, total: Decimal | None, subtotal: Decimal | None = None,
                       tax: Decimal | None = None) -> list[dict]:
    """Item dicts (``LineItem`` fields) whose line totals add up to the subtotal, the
    total or the total less tax; an empty list when no run of item lines does."""
    targets = _targets(total, subtotal, tax)
    end = _end_line(lines)
    if not targets or end is None:
        return []
    found = _item_lines(lines, end, targets)
    if not found:
        return []
    used, below = {k for k, _ in found}, _names_below(lines, found)
    return [_item(lines, k, amount, used, below) for k, amount in found]
