"""Synthetic receipt images with ground truth, rendered with Pillow.

Used by tests and benchmarks that need receipts with known fields and no dataset:
``render_receipt(seed)`` draws a plausible Malaysian-style till receipt (store name,
address, phone, receipt number, date and time, items, subtotal, tax, total, payment)
in Pillow's default font at a legible size and returns the JPEG bytes and the truth.
The same seed always gives the same bytes.

The truth dict uses ``Receipt`` field names and JSON-safe values (ISO date string,
money as strings such as ``"12.30"``), so ``Receipt.model_validate(truth)`` works.
"""

from __future__ import annotations

import io
import random
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

_PREFIXES = ["KEDAI RUNCIT", "PASARAYA", "RESTORAN", "PERNIAGAAN", "KEDAI ALAT TULIS", "FARMASI",
             "BAKERI", "KEDAI MAKAN", "HARDWARE"]
_NAMES = ["MAJU", "SINAR", "HARMONI", "CAHAYA", "BINTANG", "SENTOSA", "JAYA BARU", "WAWASAN",
          "MUTIARA", "TEKNIK", "MEGAH", "LESTARI"]
_SUFFIXES = ["SDN BHD", "ENTERPRISE", "TRADING", "SDN BHD", "(M) SDN BHD"]
_STREETS = ["JALAN MAWAR", "JALAN SEROJA", "JALAN KENARI", "JALAN PERMAS", "JALAN BUKIT INDAH",
            "JALAN TUN RAZAK", "JALAN AMPANG", "JALAN SS2"]
_AREAS = [("TAMAN MELATI", "53100", "KUALA LUMPUR"), ("TAMAN JOHOR JAYA", "81100", "JOHOR BAHRU"),
          ("BANDAR BARU BANGI", "43650", "SELANGOR"), ("TAMAN SRI MUDA", "40400", "SHAH ALAM"),
          ("TAMAN CONNAUGHT", "56000", "CHERAS"), ("BANDAR PUCHONG JAYA", "47100", "PUCHONG")]
_ITEMS = ["MINERAL WATER 1.5L", "WHITE BREAD", "FRESH MILK 1L", "A4 PAPER 80GSM", "BALL PEN BLUE",
          "NASI LEMAK", "TEH TARIK", "ROTI CANAI", "CHICKEN RICE", "INSTANT NOODLES 5S", "SUGAR 1KG",
          "COOKING OIL 2KG", "DISH SOAP", "BATTERY AA 4PCS", "PAINT BRUSH 2IN", "SCREWDRIVER SET",
          "TOILET ROLL 10S", "EGGS GRADE A 10S", "COFFEE 3IN1", "PANADOL 10S"]

WIDTH = 576  # an 80 mm till roll at ~180 dpi
CENT = Decimal("0.01")


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _truth(rng: random.Random, overrides: dict[str, Any]) -> dict[str, Any]:
    street, (area, postcode, city) = rng.choice(_STREETS), rng.choice(_AREAS)
    store = f"{rng.choice(_PREFIXES)} {rng.choice(_NAMES)} {rng.choice(_SUFFIXES)}"
    address = f"NO. {rng.randint(1, 199)}, {street} {rng.randint(1, 30)}, {area}, {postcode} {city}"
    day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(2016, 2024)
    items = []
    for name in rng.sample(_ITEMS, rng.randint(2, 5)):
        qty = rng.randint(1, 4)
        unit = Decimal(rng.randint(50, 4990)) / 100
        items.append({"name": name, "quantity": str(qty), "unit_price": _money(unit),
                      "line_total": _money(unit * qty)})
    truth: dict[str, Any] = {
        "store_name": store, "store_address": address,
        "phone": f"03-{rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
        "receipt_number": f"INV{rng.randint(100000, 999999)}",
        "date": f"{year:04d}-{month:02d}-{day:02d}",
        "time": f"{rng.randint(8, 22):02d}:{rng.randint(0, 59):02d}",
        "currency": "MYR", "tax_rate": "6", "line_items": items,
        "payment_method": "CASH",
    }
    truth.update({k: v for k, v in overrides.items() if k in truth or k in ("subtotal", "tax_amount",
                                                                            "total")})
    subtotal = sum((Decimal(i["line_total"]) for i in truth["line_items"]), Decimal(0))
    tax = (subtotal * Decimal(truth["tax_rate"]) / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    truth.setdefault("subtotal", _money(subtotal))
    truth.setdefault("tax_amount", _money(tax))
    truth.setdefault("total", _money(Decimal(truth["subtotal"]) + Decimal(truth["tax_amount"])))
    return truth


def _wrap(text: str, font, width: int) -> list[str]:
    """Break a line at commas/spaces so it fits the paper width."""
    words, lines, current = text.split(" "), [], ""
    for word in words:
        trial = f"{current} {word}".strip()
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    return lines + ([current] if current else [])


MARGIN = 24  # pixels around the printed text


# How the date line is printed (``date_style``): numeric, or a month name as Malaysian tills print it.
MALAY_MONTHS = ("JAN", "FEB", "MAC", "APR", "MEI", "JUN", "JUL", "OGOS", "SEP", "OKT", "NOV", "DIS")
ENGLISH_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _date_line(iso: str, style: str) -> str:
    d, m, y = iso[8:10], iso[5:7], iso[:4]
    if style == "dmy":
        return f"DATE: {d}/{m}/{y}"
    if style == "malay":
        return f"TARIKH: {d} {MALAY_MONTHS[int(m) - 1]} {y}"
    if style == "english":
        return f"DATE: {d} {ENGLISH_MONTHS[int(m) - 1]} {y}"
    raise ValueError(f"date_style must be 'dmy', 'malay' or 'english', not {style!r}")


def _receipt_rows(truth: dict[str, Any], font, big, date_style: str = "dmy",
                  phone_on_address: bool = False) -> list[tuple[str, str, Any]]:
    """The printed lines as (left text, right-aligned text, font); a left text starting
    with '^' is centred; the right text may be "". ``phone_on_address``: the phone is printed
    after the address, wrapped with it ("... 47400 PETALING JAYA TEL: 03-..."), instead of on a
    line of its own."""
    inner = WIDTH - 2 * MARGIN
    rows: list[tuple[str, str, Any]] = []
    for part in _wrap(truth["store_name"], big, inner):
        rows.append(("^" + part, "", big))
    tail = " TEL: " + truth["phone"] if phone_on_address else ""
    for part in _wrap(truth["store_address"] + tail, font, inner):
        rows.append(("^" + part, "", font))
    rows += ([] if phone_on_address else [("^TEL: " + truth["phone"], "", font)])
    rows += [("", "", font), ("^TAX INVOICE", "", font),
             ("RECEIPT NO: " + truth["receipt_number"], "", font),
             (_date_line(truth["date"], date_style), "TIME: " + truth["time"], font), ("-" * 48, "", font)]
    for item in truth["line_items"]:
        rows.append((item["name"], "", font))
        rows.append((f"   {item['quantity']} X {item['unit_price']}", item["line_total"], font))
    rows += [("-" * 48, "", font), ("SUBTOTAL", truth["subtotal"], font),
             (f"SST {truth['tax_rate']}%", truth["tax_amount"], font),
             ("TOTAL (RM)", truth["total"], big), (truth["payment_method"], truth["total"], font),
             ("", "", font), ("^THANK YOU, PLEASE COME AGAIN", "", font)]
    return rows


def _draw_rows(rows: list[tuple[str, str, Any]], big, font_size: int):
    """A white greyscale page with the rows printed in black (big rows a bit taller)."""
    from PIL import Image, ImageDraw

    step = int(font_size * 1.5)
    height = MARGIN * 2 + step * len(rows) + step
    image = Image.new("L", (WIDTH, height), 255)
    draw = ImageDraw.Draw(image)
    y_pos = MARGIN
    for left, right, f in rows:
        if left.startswith("^"):
            text = left[1:]
            draw.text(((WIDTH - f.getlength(text)) / 2, y_pos), text, fill=0, font=f)
        elif left:
            draw.text((MARGIN, y_pos), left, fill=0, font=f)
        if right:
            draw.text((WIDTH - MARGIN - f.getlength(right), y_pos), right, fill=0, font=f)
        y_pos += int(step * (1.25 if f is big else 1))
    return image


def render_receipt(seed: int, **overrides: Any) -> tuple[bytes, dict[str, Any]]:
    """Render receipt number ``seed``; returns (JPEG bytes, truth dict).

    Overrides: any truth field (``store_name``, ``store_address``, ``date`` as ISO text,
    ``line_items``, ``tax_rate``, ``total`` ...) and the drawing options ``font_size``
    (default 22), ``rotate`` (degrees, counter-clockwise, to test de-skewing),
    ``noise`` (0..1 speckle), ``quality`` (JPEG quality, default 90), ``date_style``
    (``"dmy"``: ``DATE: 25/03/2018``, the default; ``"malay"``: ``TARIKH: 25 MAC 2018``;
    ``"english"``: ``DATE: 25 MAR 2018``) and ``phone_on_address`` (the phone printed after the
    address and wrapped with it, not on a line of its own).
    """
    from PIL import Image, ImageFont

    rng = random.Random(seed)
    font_size = int(overrides.pop("font_size", 22))
    rotate = float(overrides.pop("rotate", 0.0))
    noise = float(overrides.pop("noise", 0.0))
    quality = int(overrides.pop("quality", 90))
    date_style = str(overrides.pop("date_style", "dmy"))
    phone_on_address = bool(overrides.pop("phone_on_address", False))
    truth = _truth(rng, overrides)

    font = ImageFont.load_default(size=font_size)
    big = ImageFont.load_default(size=int(font_size * 1.3))
    image = _draw_rows(_receipt_rows(truth, font, big, date_style, phone_on_address), big, font_size)
    if noise > 0:
        speckle = random.Random(seed + 1)
        px = image.load()
        for _ in range(int(noise * WIDTH * image.height * 0.02)):
            px[speckle.randrange(WIDTH), speckle.randrange(image.height)] = speckle.choice((0, 128))
    if rotate:
        image = image.rotate(rotate, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), truth
