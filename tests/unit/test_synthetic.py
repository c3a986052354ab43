"""Synthetic receipts: deterministic, decodable, and their truth is self-consistent."""

import io
from decimal import Decimal

import pytest
from PIL import Image

from extractor.images import decode_image
from extractor.schema import Receipt
from extractor.testing.synthetic import render_receipt


def test_same_seed_same_bytes_and_truth():
    a, b = render_receipt(5), render_receipt(5)
    assert a == b
    assert render_receipt(6)[0] != a[0]


def test_image_is_a_decodable_jpeg():
    data, _ = render_receipt(1)
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    image = decode_image(data)
    assert image.width == 576 and image.height > 400


def test_truth_arithmetic_and_schema():
    for seed in range(20):
        _, truth = render_receipt(seed)
        items = sum(Decimal(i["line_total"]) for i in truth["line_items"])
        assert Decimal(truth["subtotal"]) == items
        for item in truth["line_items"]:
            assert Decimal(item["quantity"]) * Decimal(item["unit_price"]) == Decimal(item["line_total"])
        assert Decimal(truth["subtotal"]) + Decimal(truth["tax_amount"]) == Decimal(truth["total"])
        receipt = Receipt.model_validate(truth)
        assert receipt.date.isoformat() == truth["date"] and receipt.currency == "MYR"


def test_overrides_and_drawing_options():
    data, truth = render_receipt(2, store_name="ACME TRADING", date="2019-02-03", rotate=5, noise=0.3)
    assert truth["store_name"] == "ACME TRADING" and truth["date"] == "2019-02-03"
    plain, _ = render_receipt(2, store_name="ACME TRADING", date="2019-02-03")
    rotated = decode_image(data)
    assert rotated.size != decode_image(plain).size  # rotate expands the canvas
    items = [{"name": "X", "quantity": "2", "unit_price": "1.50", "line_total": "3.00"}]
    _, t = render_receipt(3, line_items=items, tax_rate="0")
    assert (t["subtotal"], t["tax_amount"], t["total"]) == ("3.00", "0.00", "3.00")


def test_the_date_line_in_each_printed_style():
    from extractor.testing.synthetic import _date_line

    assert _date_line("2018-03-07", "dmy") == "DATE: 07/03/2018"
    assert _date_line("2018-03-07", "malay") == "TARIKH: 07 MAC 2018"
    assert _date_line("2018-12-25", "english") == "DATE: 25 DEC 2018"
    with pytest.raises(ValueError, match="date_style"):
        _date_line("2018-12-25", "roman")
