"""Line items of the OCR parser: kept only where the receipt's arithmetic proves them."""

from decimal import Decimal

import pytest

from extractor.ocr.items import extract_line_items
from extractor.ocr.parser import parse_receipt
from extractor.schema import Receipt
from extractor.testing.ocr_lines import lines_from_text

NAMES_ABOVE = """
KEDAI MAJU SDN BHD
DATE: 12/03/2018   TIME: 10:12
MINERAL WATER 1.5L
2 X 3.50   7.00
WHITE BREAD
1 X 4.20   4.20
SUBTOTAL   11.20
SST 6%   0.67
TOTAL (RM)   11.87
CASH   20.00
CHANGE   8.13
"""

NAMES_BELOW = """
RECEIPT NO.: CS1802/27714   DATE: 12/02/2018
ITEM QTY U/P DISC% AMOUNT
(RM)
9555067700208 10 10.57 0.00   105.66*
- IK YELLOW 70GRAMS
9557583450025 1 17.45 0.00   17.45*
- PAPYRUS DARK COLOUR PAPER
Total Qty. : 11   123.11
TOTAL TAX   7.39
TOTAL   130.50
"""


def _items(text: str, **amounts: str) -> list[dict]:
    return extract_line_items(lines_from_text(text), **{k: Decimal(v) for k, v in amounts.items()})


def test_items_that_sum_to_the_subtotal_with_quantity_and_unit_price():
    items = _items(NAMES_ABOVE, total="11.87", subtotal="11.20", tax="0.67")
    assert [(i["name"], i["quantity"], i["unit_price"], i["line_total"]) for i in items] == [
        ("MINERAL WATER 1.5L", Decimal("2"), Decimal("3.50"), Decimal("7.00")),
        ("WHITE BREAD", Decimal("1"), Decimal("4.20"), Decimal("4.20"))]


def test_names_printed_under_their_numbers_and_a_quantity_that_does_not_multiply():
    items = _items(NAMES_BELOW, total="130.50", tax="7.39")  # 130.50 - 7.39 = 123.11
    assert [(i["name"], i["quantity"], i["line_total"]) for i in items] == [
        ("IK YELLOW 70GRAMS", None, Decimal("105.66")),  # 10 x 10.57 is 105.70: no quantity claimed
        ("PAPYRUS DARK COLOUR PAPER", Decimal("1"), Decimal("17.45"))]


@pytest.mark.parametrize("amounts", [
    {"total": "11.95", "subtotal": "11.30"},  # nothing adds up: a partial list would pass for a real one
    {"total": "0.00"},
])
def test_no_items_without_arithmetic_proof(amounts):
    assert _items(NAMES_ABOVE, **amounts) == []


def test_a_rounded_cash_total_is_within_tolerance():
    text = "SHOP ENTERPRISE\nDATE 01/02/2018\nTEH TARIK   2.54\nROTI CANAI   1.50\nTOTAL   4.05\n"
    assert [i["line_total"] for i in _items(text, total="4.05")] == [Decimal("2.54"), Decimal("1.50")]


def test_the_parser_fills_receipt_line_items():
    parsed = parse_receipt(lines_from_text(NAMES_ABOVE))
    receipt = Receipt(**{k: v for k, v in parsed.values.items() if v is not None})
    assert [i.name for i in receipt.line_items] == ["MINERAL WATER 1.5L", "WHITE BREAD"]
    assert sum(i.line_total for i in receipt.line_items) == receipt.subtotal
