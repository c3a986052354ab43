"""Parsers that turn the strings models and OCR produce into typed values.

Every parser returns ``None`` for "nothing there" and raises ``NormalizationError``
for "something there that cannot be read", so callers can tell a blank field from a
garbled one.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from extractor.errors import NormalizationError

# Printed currency forms mapped onto ISO 4217 codes; a three-letter code not in ISO_4217
# is rejected, not guessed.
CURRENCIES_SINCE = date(2010, 1, 1)


def _iso_4217_codes() -> frozenset[str]:
    """ISO 4217 codes that were legal tender somewhere at any time since CURRENCIES_SINCE,
    from the CLDR data Babel ships (so BGN, replaced by EUR in 2026, still reads on older
    receipts; funds codes, metals and currencies retired before 2010 do not)."""
    from babel.core import get_global
    from babel.numbers import get_territory_currencies

    codes: set[str] = set()
    for territory in get_global("territory_currencies"):
        codes.update(get_territory_currencies(territory, start_date=CURRENCIES_SINCE,
                                              end_date=date.today(), tender=True))
    return frozenset(codes)


ISO_4217 = _iso_4217_codes()
CURRENCY_ALIASES = {
    "RM": "MYR", "MYR": "MYR", "$": "USD", "US$": "USD", "USD": "USD", "€": "EUR",
    "EURO": "EUR", "EUROS": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR", "RS": "INR",
    "S$": "SGD", "A$": "AUD", "C$": "CAD", "HK$": "HKD", "NZ$": "NZD", "₩": "KRW",
    "฿": "THB", "₱": "PHP", "₫": "VND", "RP": "IDR", "CHF": "CHF", "FR": "CHF",
    "KR": "SEK", "ZŁ": "PLN", "R$": "BRL", "₺": "TRY", "₽": "RUB",
}
_CURRENCY_WORDS = frozenset(k for k in CURRENCY_ALIASES if k.isalpha()) | ISO_4217
_SYMBOLS = sorted((k for k in CURRENCY_ALIASES if not k.isalpha()), key=len, reverse=True)

# Month names and abbreviations, looked up as whole words: English, a few French and
# Spanish ones, and Malay and Indonesian (JANUARI ... DISEMBER / DIS, MARET, AGUSTUS / AGT,
# DESEMBER / DES), which Malaysian receipts print.
MONTHS = {m: i for i, names in enumerate(
    ["", "JAN JANUARY JANVIER JAN. ENE ENERO JANUARI", "FEB FEBRUARY FEV FEB. FEBRUARI",
     "MAR MARCH MARS MAC MARET", "APR APRIL AVR ABR", "MAY MAI MAYO MEI", "JUN JUNE JUIN JUNI",
     "JUL JULY JUIL JULAI JULI", "AUG AUGUST AOUT AGO OGOS AGUSTUS AGT", "SEP SEPT SEPTEMBER",
     "OCT OCTOBER OKT OKTOBER", "NOV NOVEMBER", "DEC DECEMBER DEZ DIC DISEMBER DIS DESEMBER DES"])
    for m in names.split()}


def parse_currency(value: str | None) -> str | None:
    """Map a printed currency ('RM', '$', 'eur') onto its ISO 4217 code."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().upper().rstrip(".")
    if text in CURRENCY_ALIASES:
        return CURRENCY_ALIASES[text]
    if text in ISO_4217:
        return text
    raise NormalizationError(f"unknown currency {value!r}")


def parse_money(value: str | int | float | Decimal | None) -> Decimal | None:
    """Read an amount as printed: '1,234.50', '1.234,50', 'RM 12.30', '-3.00', '12.30-'."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise NormalizationError(f"not an amount: {value!r}")
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    text = str(value).strip().upper()
    if not text:
        return None
    for sym in _SYMBOLS:
        text = text.replace(sym, " ")
    # Currency words (RM, USD, EUR, ZŁ ...), also glued to the digits ('RM12.30', which a
    # word-boundary pattern misses); any other word makes the value unreadable.
    text = re.sub(r"[^\W\d_]+", lambda m: " " if m.group(0) in _CURRENCY_WORDS else m.group(0), text)
    text = re.sub(r"\s+", "", text)
    negative = text.startswith("-") or text.endswith("-") or (text.startswith("(") and text.endswith(")"))
    text = text.strip("-()+")
    if not re.fullmatch(r"\d[\d.,' ]*", text or "x") or re.search(r"[.,']{2}", text):
        raise NormalizationError(f"not an amount: {value!r}")
    text = text.replace("'", "")
    last_dot, last_comma = text.rfind("."), text.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        decimal_sep = "." if last_dot > last_comma else ","
    elif last_comma >= 0:
        # '12,50' is a decimal comma; '1,250' (three digits after) is a thousands mark.
        tail = text[last_comma + 1:]
        decimal_sep = "," if len(tail) != 3 or text.count(",") == 1 and len(tail) == 2 else None
        if text.count(",") > 1:
            decimal_sep = None
    elif text.count(".") > 1:
        decimal_sep = None  # '1.234.567' thousands dots
        if len(text) - last_dot - 1 != 3:
            decimal_sep = "."
    else:
        decimal_sep = "."
    if decimal_sep is None:
        digits = text.replace(",", "").replace(".", "")
    else:
        thousands = "," if decimal_sep == "." else "."
        whole, _, frac = text.rpartition(decimal_sep)
        digits = whole.replace(thousands, "").replace(decimal_sep, "") + ("." + frac if whole else frac)
        if not whole:
            digits = frac
    try:
        amount = Decimal(digits)
    except InvalidOperation as exc:
        raise NormalizationError(f"not an amount: {value!r}") from exc
    return -amount if negative else amount


def _year(y: int) -> int:
    if y < 100:  # two-digit years: receipts are recent, so 00-69 -> 2000s, 70-99 -> 1900s
        return 2000 + y if y < 70 else 1900 + y
    return y


def parse_date(value: str | date | None, *, day_first: bool = True,
               today: date | None = None) -> date | None:
    """Read a printed date into a ``date``.

    Ambiguous numeric dates ('03/04/2018') follow ``day_first`` (the locale hint), unless
    only one reading is a valid calendar date or only one is not in the future.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip().upper()
    if not text:
        return None
    m = re.search(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})", text)
    if m:
        return _make(int(m[1]), int(m[2]), int(m[3]), value)
    m = re.search(r"(\d{1,2})[-/. ]([A-Z]{3,9}\.?)[-/. ,]*(\d{2,4})", text)
    if m and m[2].rstrip(".") in MONTHS or (m and m[2] in MONTHS):
        return _make(_year(int(m[3])), MONTHS.get(m[2], MONTHS.get(m[2].rstrip("."))), int(m[1]), value)
    m = re.search(r"([A-Z]{3,9}\.?)[ -]?(\d{1,2})(?:ST|ND|RD|TH)?,?[ -]?(\d{2,4})", text)
    if m and m[1].rstrip(".") in MONTHS:
        return _make(_year(int(m[3])), MONTHS[m[1].rstrip(".")], int(m[2]), value)
    m = re.search(r"(?<!\d)(\d{1,2})[-/.](\d{1,2})[-/.](\d{2,4})(?!\d)", text)
    if m:
        a, b, y = int(m[1]), int(m[2]), _year(int(m[3]))
        first, second = ((y, b, a), (y, a, b)) if day_first else ((y, a, b), (y, b, a))
        candidates = [c for c in (first, second) if _valid(*c)]
        if today is not None:
            past = [c for c in candidates if date(*c) <= today]
            candidates = past or candidates
        if candidates:
            return date(*candidates[0])
        raise NormalizationError(f"not a calendar date: {value!r}")
    m = re.fullmatch(r"(\d{2})(\d{2})(\d{2}|\d{4})", text)  # 251218 / 25122018
    if m:
        a, b, y = int(m[1]), int(m[2]), _year(int(m[3]))
        return _make(y, b, a, value) if day_first else _make(y, a, b, value)
    raise NormalizationError(f"not a date: {value!r}")


def _valid(y: int, m: int, d: int) -> bool:
    try:
        date(y, m, d)
    except ValueError:
        return False
    return True


def _make(y: int, m: int, d: int, raw: object) -> date:
    try:
        return date(y, m, d)
    except (ValueError, TypeError) as exc:
        raise NormalizationError(f"not a calendar date: {raw!r}") from exc


def parse_time(value: str | None) -> str | None:
    """Read '1:05 PM', '13:05:22', '1305' into 24-hour 'HH:MM'."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip().upper().replace(".", ":")
    m = re.search(r"(\d{1,2}):(\d{2})(?::\d{2})?\s*([AP])?\.?M?\b", text) or \
        re.fullmatch(r"(\d{2})(\d{2})()", text)
    if not m:
        raise NormalizationError(f"not a time: {value!r}")
    h, mi, ampm = int(m[1]), int(m[2]), m[3]
    if ampm:
        if not 1 <= h <= 12:
            raise NormalizationError(f"not a 12-hour time: {value!r}")
        h = h % 12 + (12 if ampm == "P" else 0)
    if not (0 <= h <= 23 and 0 <= mi <= 59):
        raise NormalizationError(f"not a time: {value!r}")
    return f"{h:02d}:{mi:02d}"


def parse_rate(value: str | float | Decimal | None) -> Decimal | None:
    """Tax rate as a percentage: '6%', '0.06' and 6 all become Decimal('6')."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value)
    rate = parse_money(text.replace("%", ""))
    # a fraction (0.06) means 6%, but '0.5%' printed with its sign is half a percent
    if rate is not None and 0 < rate < 1 and "%" not in text:
        rate = rate * 100
    return rate


def amounts_close(a: Decimal | None, b: Decimal | None, tolerance: Decimal = Decimal("0.05")) -> bool:
    """Arithmetic checks compare with a tolerance (rounding on receipts), never exact."""
    if a is None or b is None:
        return True
    return abs(a - b) <= tolerance
