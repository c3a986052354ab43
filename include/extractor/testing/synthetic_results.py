"""Synthetic staged results for load tests and benchmarks (no images, no model).

``make_results(n)`` gives realistic ``ExtractionResult``s: consistent arithmetic,
varied stores, currencies, line items and optional fields, with a chosen share of
receipts broken in one known way each (``BREAKAGES``) and a share of extraction
failures. ``expected_bad`` lists which ids were broken, so a test can check that
validation caught exactly those.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from decimal import Decimal
from typing import Any

from extractor.schema import ExtractionResult, LineItem, Receipt

STORES = [("KEDAI MAKAN SEDAP SDN BHD", "MYR"), ("Corner Grocery", "USD"),
          ("Boulangerie du Centre", "EUR"), ("FairPrice Xtra", "SGD"),
          ("The Coffee House", "GBP"), ("99 SPEED MART S/B", "MYR"),
          ("Hardware & Tools Co.", "USD"), ("Farmacia Central", "EUR")]
ITEMS = ["NASI LEMAK", "Teh Tarik", "Croissant", "Milk 1L", "AA Batteries 4pk",
         "Paracetamol 500mg", "Flat White", "Screwdriver Set", "Bananas (kg)", "Bread"]
PAYMENTS = ["cash", "card", "e-wallet"]
CENT = Decimal("0.01")

# One way to break a receipt, and the check that must catch it.
BREAKAGES: dict[str, str] = {
    "future_date": "date_in_window",
    "ancient_date": "date_in_window",
    "negative_total": "total_in_range",
    "total_mismatch": "check_total_arithmetic",
    "missing_total": "total_present",
    "missing_store": "store_name_present",
    "bad_currency": "currency_iso4217",
    "bad_time": "time_format",
    "bad_card": "card_last4_digits",
    "huge_total": "total_in_range",
    "tax_rate_too_high": "tax_rate_in_range",
    "line_items_mismatch": "check_line_items_sum",
}


def receipt_id_for(seed: int, i: int) -> str:
    return hashlib.sha256(f"synthetic-{seed}-{i}".encode()).hexdigest()


def good_receipt(rng: random.Random, logical_date: dt.date) -> Receipt:
    store, currency = rng.choice(STORES)
    items = []
    for _ in range(rng.randint(1, 6)):
        qty = Decimal(rng.choice([1, 1, 1, 2, 3]))
        price = (Decimal(rng.randint(50, 5000)) / 100).quantize(CENT)
        items.append(LineItem(name=rng.choice(ITEMS), quantity=qty, unit_price=price,
                              line_total=(qty * price).quantize(CENT)))
    subtotal = sum((i.line_total for i in items), Decimal(0))
    rate = Decimal(rng.choice([0, 6, 8, 10, 20]))
    tax = (subtotal * rate / 100).quantize(CENT)
    discount = Decimal(rng.choice([0, 0, 0, 1, 2])) if subtotal > 5 else Decimal(0)
    payment = rng.choice(PAYMENTS)
    return Receipt(
        store_name=store, store_address=f"{rng.randint(1, 200)} Main Street",
        phone=f"+60 3-{rng.randint(1000, 9999)} {rng.randint(1000, 9999)}" if rng.random() < .7 else None,
        date=logical_date - dt.timedelta(days=rng.randint(0, 30)),
        time=f"{rng.randint(7, 22):02d}:{rng.randint(0, 59):02d}" if rng.random() < .9 else None,
        currency=currency, subtotal=subtotal, tax_amount=tax, tax_rate=rate or None,
        discount=discount or None, total=subtotal + tax - discount, payment_method=payment,
        card_last4=f"{rng.randint(0, 9999):04d}" if payment == "card" else None,
        receipt_number=f"INV-{rng.randint(100000, 999999)}", line_items=items,
        confidence={"total": round(rng.uniform(.6, 1), 3)} if rng.random() < .5 else {})


def break_receipt(r: Receipt, how: str, logical_date: dt.date) -> Receipt:
    """Apply one breakage (model_copy skips the normalisers: a backend bug could too)."""
    update: dict[str, Any] = {
        "future_date": {"date": logical_date + dt.timedelta(days=30)},
        "ancient_date": {"date": dt.date(1990, 1, 1)},
        "negative_total": {"total": -abs(r.total or Decimal(1)), "subtotal": None},
        "total_mismatch": {"total": (r.total or Decimal(0)) + Decimal("10.00")},
        "missing_total": {"total": None},
        "missing_store": {"store_name": None},
        "bad_currency": {"currency": "XXY"},
        "bad_time": {"time": "25:61"},
        "bad_card": {"card_last4": "12a4"},
        "huge_total": {"total": Decimal("250000.00"), "subtotal": None},
        "tax_rate_too_high": {"tax_rate": Decimal("45")},
        "line_items_mismatch": {"line_items": r.line_items + [LineItem(
            name="phantom", quantity=1, unit_price=Decimal("99.99"), line_total=Decimal("99.99"))]},
    }[how]
    return r.model_copy(update=update)


def make_results(n: int, *, seed: int = 0, bad_share: float = 0.05, failed_share: float = 0.02,
                 logical_date: dt.date = dt.date(2024, 6, 30),
                 extractor_version: str = "ocr:rapidocr@3.10.0:parser-v3"
                 ) -> tuple[list[ExtractionResult], dict[str, str]]:
    """``n`` results and ``{receipt_id: breakage}`` for the broken ones ('extract' = failed)."""
    rng = random.Random(seed)
    results, expected_bad = [], {}
    kinds = sorted(BREAKAGES)
    for i in range(n):
        rid = receipt_id_for(seed, i)
        source = f"receipts/dt={logical_date}/r{i:06d}.jpg"
        timings = {"preprocess_s": round(rng.uniform(.001, .01), 4),
                   "forward_s": round(rng.uniform(.05, .5), 4)}
        roll = rng.random()
        if roll < failed_share:
            results.append(ExtractionResult.failed(
                receipt_id=rid, source=source, extractor_version=extractor_version,
                reason="model output is not JSON", raw_text="I cannot read this receipt",
                timings=timings))
            expected_bad[rid] = "extract"
            continue
        receipt = good_receipt(rng, logical_date)
        if roll < failed_share + bad_share:
            how = kinds[i % len(kinds)]
            receipt = break_receipt(receipt, how, logical_date)
            expected_bad[rid] = how
        results.append(ExtractionResult(
            receipt_id=rid, source=source, status="ok", receipt=receipt,
            raw_text=f"{receipt.store_name}\nTOTAL {receipt.total}",
            extractor_version=extractor_version, timings=timings))
    return results, expected_bad
