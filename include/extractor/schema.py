"""The extraction schema: the single source of truth.

``Receipt`` drives the prompt's JSON shape (``prompt_json_shape``), the validation
suite (the pipeline derives expectations from the field types and bounds here) and the
warehouse DDL (generated from ``Receipt.model_fields``). Change a field here and all
three follow.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

import extractor.normalize as normalize

MONEY_FIELDS = ("subtotal", "tax_amount", "tip", "discount", "total")


class LineItem(BaseModel):
    """One purchased item as printed on the receipt."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="item description as printed")
    quantity: Decimal | None = Field(None, description="count or weight")
    unit_price: Decimal | None = Field(None, description="price of one unit")
    line_total: Decimal | None = Field(None, description="amount charged for the line")

    @field_validator("quantity", "unit_price", "line_total", mode="before")
    @classmethod
    def _money(cls, v: Any) -> Decimal | None:
        return normalize.parse_money(v)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> str:
        return " ".join(str(v if v is not None else "").split())


class Receipt(BaseModel):
    """The fields extracted from one receipt, normalised and typed."""

    model_config = ConfigDict(extra="ignore")

    store_name: str | None = Field(None, description="registered business name")
    store_address: str | None = Field(None, description="full address, one line")
    phone: str | None = Field(None, description="store phone number")
    date: dt.date | None = Field(None, description="purchase date, YYYY-MM-DD")
    time: str | None = Field(None, description="purchase time, HH:MM 24h")
    currency: str | None = Field(None, description="ISO 4217 code, e.g. MYR, USD, EUR")
    subtotal: Decimal | None = Field(None, description="amount before tax")
    tax_amount: Decimal | None = Field(None, description="total tax charged")
    tax_rate: Decimal | None = Field(None, description="tax rate in percent, e.g. 6")
    tip: Decimal | None = Field(None, description="tip or service charge")
    discount: Decimal | None = Field(None, description="total discounts, positive")
    total: Decimal | None = Field(None, description="amount paid, including tax")
    payment_method: str | None = Field(None, description="cash, card, e-wallet ...")
    card_last4: str | None = Field(None, description="last four digits of the card")
    receipt_number: str | None = Field(None, description="receipt / invoice / transaction id")
    line_items: list[LineItem] = Field(default_factory=list, description="purchased items")
    confidence: dict[str, float] = Field(
        default_factory=dict, description="per-field confidence in [0, 1] where the backend gives one")

    @field_validator("store_name", "store_address", "phone", "payment_method",
                     "receipt_number", mode="before")
    @classmethod
    def _text(cls, v: Any) -> str | None:
        if v is None:
            return None
        text = " ".join(str(v).split())
        return text or None

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, v: Any) -> dt.date | None:
        return normalize.parse_date(v)

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: Any) -> str | None:
        return normalize.parse_time(v)

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, v: Any) -> str | None:
        return normalize.parse_currency(v)

    @field_validator(*MONEY_FIELDS, mode="before")
    @classmethod
    def _money(cls, v: Any) -> Decimal | None:
        return normalize.parse_money(v)

    @field_validator("tax_rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Decimal | None:
        return normalize.parse_rate(v)

    @field_validator("card_last4", mode="before")
    @classmethod
    def _card(cls, v: Any) -> str | None:
        if v is None:
            return None
        text = "".join(str(v).split())
        if not text:
            return None
        digits = "".join(ch for ch in text if ch.isdigit())
        # '**** 1234' and '4111111111111234' both mean 1234; anything else is kept as
        # printed so the expectation suite flags it instead of it vanishing here.
        return digits[-4:] if len(digits) >= 4 else text

    @field_validator("line_items", mode="before")
    @classmethod
    def _items(cls, v: Any) -> list:
        return [] if v is None else v


def scalar_fields() -> list[str]:
    """Receipt fields that are one value each (what a prompt asks for, what a table holds)."""
    return [n for n in Receipt.model_fields if n not in ("line_items", "confidence")]


def prompt_json_shape() -> dict[str, Any]:
    """The JSON object a model is asked to return, built from the field descriptions."""
    shape: dict[str, Any] = {n: Receipt.model_fields[n].description for n in scalar_fields()}
    shape["line_items"] = [{n: f.description for n, f in LineItem.model_fields.items()}]
    return shape


Status = Literal["ok", "failed"]


class ExtractionResult(BaseModel):
    """What a backend returns for one input: a receipt, or a failure with its reason.

    A failure always carries a non-empty ``reason`` and, when the model produced any,
    its ``raw_text``; nothing is reported as an empty string.
    """

    receipt_id: str = Field(description="sha256 of the image bytes")
    source: str = Field(description="where the bytes came from (URI or key)")
    status: Status
    receipt: Receipt | None = None
    reason: str | None = None
    raw_text: str | None = None
    extractor_version: str
    timings: dict[str, float] = Field(default_factory=dict)
    review_reason: str | None = Field(
        None, description="set when the receipt is loaded but flagged for a person to check "
                          "(a required field's confidence below the review threshold)")

    @classmethod
    def failed(cls, *, receipt_id: str, source: str, reason: str, extractor_version: str,
               raw_text: str | None = None, timings: dict[str, float] | None = None
               ) -> ExtractionResult:
        if not reason:
            raise ValueError("a failed result needs a reason")
        return cls(receipt_id=receipt_id, source=source, status="failed", reason=reason,
                   raw_text=raw_text, extractor_version=extractor_version,
                   timings=timings or {})
