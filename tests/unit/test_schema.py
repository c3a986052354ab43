"""The Receipt schema normalises what models and OCR write into typed values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pydantic import ValidationError

from extractor.schema import MONEY_FIELDS, ExtractionResult, Receipt, prompt_json_shape, scalar_fields


def test_strings_become_typed_values():
    receipt = Receipt.model_validate({
        "store_name": "  SANYU   STATIONERY ", "date": "05/12/2017", "time": "1:05 PM", "currency": "rm",
        "subtotal": "RM 6.60", "tax_amount": "0.40", "tax_rate": "6%", "total": "7,00",
        "card_last4": "**** **** 1234", "line_items": [{"name": " Pen ", "quantity": "2", "line_total": "3.50"}],
        "unknown_key": "ignored"})
    assert receipt.store_name == "SANYU STATIONERY"
    assert receipt.date == dt.date(2017, 12, 5) and receipt.time == "13:05" and receipt.currency == "MYR"
    assert (receipt.subtotal, receipt.tax_amount, receipt.tax_rate, receipt.total) == (
        Decimal("6.60"), Decimal("0.40"), Decimal("6"), Decimal("7.00"))
    assert all(isinstance(getattr(receipt, f), Decimal) for f in ("subtotal", "total"))
    assert receipt.card_last4 == "1234"
    assert receipt.line_items[0].name == "Pen" and receipt.line_items[0].quantity == Decimal("2")


def test_blank_values_are_none_and_garbled_values_are_errors():
    receipt = Receipt.model_validate({"store_name": "   ", "total": None, "date": "", "line_items": None})
    assert receipt.store_name is None and receipt.total is None and receipt.date is None
    assert receipt.line_items == []
    with pytest.raises(ValidationError, match="total"):
        Receipt.model_validate({"total": "twelve"})
    with pytest.raises(ValidationError, match="currency"):
        Receipt.model_validate({"currency": "dollars-ish"})


def test_prompt_shape_and_scalar_fields_cover_the_model():
    shape = prompt_json_shape()
    assert set(shape) == set(scalar_fields()) | {"line_items"}
    assert set(MONEY_FIELDS) <= set(scalar_fields())
    assert "confidence" not in shape and all(isinstance(v, str) for k, v in shape.items() if k != "line_items")


def test_a_failed_result_needs_a_reason():
    with pytest.raises(ValueError):
        ExtractionResult.failed(receipt_id="x", source="s", reason="", extractor_version="v")
    failed = ExtractionResult.failed(receipt_id="x", source="s", reason="bad image: empty",
                                     extractor_version="v", raw_text="raw")
    assert failed.status == "failed" and failed.receipt is None and failed.raw_text == "raw"


def test_results_round_trip_through_json():
    result = ExtractionResult(receipt_id="a" * 64, source="s3://b/k.jpg", status="ok",
                              receipt=Receipt(total=Decimal("7.00"), date=dt.date(2017, 12, 5)),
                              raw_text="{}", extractor_version="hf:m@main:v1", timings={"forward_s": 0.1})
    again = ExtractionResult.model_validate_json(result.model_dump_json())
    assert again == result and again.receipt.total == Decimal("7.00")
