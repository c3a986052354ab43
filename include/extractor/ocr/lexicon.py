"""OCR correction for store names and addresses: spacing, look-alike characters, a lexicon.

The recogniser's usual slips on these receipts are dropped spaces ("27,JALAN",
"SHHMOTORSDNBHD"), digits read for letters inside words ("10T" for LOT, "SET1A") and
one-letter misreads of common words ("JAIAN", "SCLANGOR"). Corrections are made only
towards a fixed lexicon of generic Malaysian receipt and address words (no store or
place names taken from the evaluation labels), and only when the correction is
unambiguous, so a correct but unknown word is left alone.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

LEXICON = frozenset("""
JALAN JLN LORONG LRG LEBUH LEBUHRAYA PERSIARAN TAMAN TMN BANDAR BDR KAWASAN PERINDUSTRIAN
INDUSTRI INDUSTRIAL KAMPUNG KAMPONG BATU BUKIT SUNGAI SG PULAU TANJUNG SIMPANG PEKAN PUSAT
MEDAN DATARAN WISMA BANGUNAN MENARA KOMPLEKS PLAZA MALL CENTRE CENTER CITY SQUARE PARK
BLOCK BLOK LEVEL FLOOR TINGKAT GROUND LOT UNIT SEKSYEN SECTION OFF ROAD STREET AVENUE
UTAMA UTARA SELATAN TIMUR BARAT BARU LAMA JAYA INDAH PERMAI DAMAI MAJU SETIA MEWAH
SELANGOR JOHOR KEDAH KELANTAN MELAKA MALACCA PAHANG PERAK PERLIS PENANG PINANG SABAH
SARAWAK TERENGGANU NEGERI SEMBILAN WILAYAH PERSEKUTUAN PUTRAJAYA LABUAN DARUL EHSAN TAKZIM
MALAYSIA KUALA LUMPUR PETALING SHAH ALAM KLANG SUBANG PUCHONG CHERAS KAJANG AMPANG SETAPAK
KEPONG RAWANG SELAYANG BANGI SERDANG SEMENYIH DENGKIL CYBERJAYA DAMANSARA BANGSAR
KEMBANGAN BALAKONG SKUDAI BAHRU TEBRAU MASAI PASIR GUDANG KULAI SENAI IPOH SEREMBAN
SENTUL BRICKFIELDS WANGSA MAJU GOMBAK SUNWAY MUTIARA KOTA KINABALU KUCHING
SDN BHD BERHAD ENTERPRISE ENTERPRISES TRADING COMPANY CORPORATION HOLDINGS INTERNATIONAL
MARKETING INDUSTRIES SERVICES SERVICE RESTAURANT RESTAURANTS RESTORAN KEDAI PERNIAGAAN
SYARIKAT HARDWARE ELECTRICAL STATIONERY BOOKSTORE BOOKS BOOK BAKERY BAKERIES CAFE COFFEE
MART MINIMARKET MINI MARKET SUPERMARKET HYPERMARKET PASARAYA FARMASI PHARMACY STORE STORES
SHOP SHOPPING TRADERS TRADE FOOD FOODS BEVERAGE CONFECTIONERY SEAFOOD CHICKEN RICE NOODLE
MAKANAN MINUMAN RUNCIT TEKSTIL AUTO MOTOR MOTORS PARTS ENGINEERING TRAVEL PETROL STATION
GLOBAL GENERAL RETAIL WHOLESALE SUPPLY SUPPLIES CENTRAL GROUP BROTHERS HOUSE HOME DECO
GIFT GIFTS FRESH GARDEN KITCHEN BEAUTY HEALTH CARE OPTICAL TAILORING HANDICRAFT PRINTING
BOOKSTORE BOOKSTORES HEALTHCARE SUPERSTORE
THE AND OF
""".split())
# One-letter misreads are corrected only towards long, distinctive words: most short
# lexicon words have real neighbours one edit away (PERMAS/PERMAI, ANGSA/WANGSA).
EDIT_TARGETS = frozenset("""
JALAN TAMAN BANDAR KAWASAN PERINDUSTRIAN SEKSYEN PERSIARAN LEBUHRAYA SELANGOR JOHOR KUALA
LUMPUR PETALING KEMBANGAN MALAYSIA TERENGGANU KELANTAN SEMBILAN PERSEKUTUAN ENTERPRISE
TRADING RESTORAN RESTAURANT HARDWARE STATIONERY PERNIAGAAN SYARIKAT SUPERMARKET
INTERNATIONAL MARKETING HOLDINGS CORPORATION ELECTRICAL CONFECTIONERY BERHAD
""".split())
# Words that the recogniser glues to the next / previous word ("JALANTEMENGGUNG",
# "CHERASSELANGOR"); a token that starts / ends with one of them is split.
PREFIX_SPLIT = ("JALAN", "TAMAN", "BANDAR", "KAWASAN", "LORONG", "PERSIARAN", "SEKSYEN")
SUFFIX_SPLIT = ("SELANGOR", "KUALA", "LUMPUR", "MALAYSIA", "PAHANG", "KEDAH", "MELAKA", "PERAK",
                "ENTERPRISE", "TRADING", "HARDWARE", "RESTAURANT", "RESTORAN")
_LOOKALIKE_TO_LETTER = str.maketrans({"0": "O", "1": "I", "5": "S", "8": "B", "6": "G", "2": "Z"})
_LOOKALIKE_TO_L = str.maketrans({"1": "L", "0": "O", "5": "S", "8": "B", "6": "G"})
_GLUED_SUFFIX = re.compile(r"(?<=[A-Za-z])(SDN\.?\s?BHD|SDN|BHD)\b", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9]+")
# "SDNBHD", "SDN.BHD", and the misreads "SON BHD", "SIN BHD", "SDN 3HD", "SDN DHD" (never a
# real pair of words): all written "SDN BHD"; a correct "Sdn Bhd" keeps its case
_SDN_BHD = re.compile(r"\b(?:S[DO0IU]?[NHM]|SDN)\s?\.?\s?(?:[B3D8]H[DU]|BHD)\b", re.IGNORECASE)
# "99 SPEED MART 5/B": S/B (Sdn Bhd) with S read as 5 or B as 8, at the end of a store name
_SB_MISREAD = re.compile(r"(?<=[A-Za-z])\s+(?:5/B|S/8|5/8|5B|S8)$")
# An unknown piece left by splitting a glued word must not be a word ending ("KITCHEN|ETTE")
_SUFFIXES = frozenset("ETTE ETTES ING INGS ERS ERY IES ISE ION IONS ELY ATE ATES IST ISTS".split())


@lru_cache(maxsize=4096)
def _edit1_match(word: str) -> str | None:
    """The only lexicon word one edit away from ``word`` (length >= 5), if exactly one."""
    if len(word) < 5:
        return None
    hits = {w for w in EDIT_TARGETS if abs(len(w) - len(word)) <= 1 and len(w) >= 5 and _within_one(word, w)}
    return hits.pop() if len(hits) == 1 else None


def _within_one(a: str, b: str) -> bool:
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=False)) == 1
    if len(a) > len(b):
        a, b = b, a
    for i in range(len(b)):
        if b[:i] + b[i + 1:] == a:
            return True
    return False


def _split_glued(word: str) -> str | None:
    """'BAHRUJOHOR' -> 'BAHRU JOHOR' when both halves are lexicon words."""
    for i in range(3, len(word) - 2):
        if word[:i] in LEXICON and word[i:] in LEXICON:
            return f"{word[:i]} {word[i:]}"
    return None


def _segment(word: str) -> str | None:
    """Split a long glued token into lexicon words and at most a few unknown pieces
    ("SANYUSTATIONERYSHOP" -> "SANYU STATIONERY SHOP"), only when lexicon words (of 4+
    letters) cover most of it, so an unknown compound ("ZAWIAJAYA") is left alone."""
    n = len(word)
    if n < 9:
        return None
    # best[j]: (cost, pieces) of word[:j]; a piece costs 3, an unknown letter 1 more
    best: list[tuple[int, list[str]] | None] = [(0, [])] + [None] * n
    for j in range(1, n + 1):
        for i in range(max(0, j - 24), j):
            prev = best[i]
            piece = word[i:j]
            known = len(piece) >= 4 and piece in LEXICON
            if prev is None or (not known and (len(piece) < 3 or piece in _SUFFIXES)):
                continue
            cost = prev[0] + 3 + (0 if known else len(piece))
            if best[j] is None or cost < best[j][0]:
                best[j] = (cost, prev[1] + [piece])
    done = best[n]
    if done is None or len(done[1]) < 2:
        return None
    covered = sum(len(p) for p in done[1] if len(p) >= 4 and p in LEXICON)
    return " ".join(done[1]) if covered >= 0.6 * n else None


def _split_affix(word: str) -> str | None:
    for prefix in PREFIX_SPLIT:
        if word.startswith(prefix) and len(word) - len(prefix) >= 3:
            return f"{prefix} {word[len(prefix):]}"
    for suffix in SUFFIX_SPLIT:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return f"{word[:-len(suffix)]} {suffix}"
    return None


def correct_token(token: str) -> str:
    up = token.upper()
    if up in LEXICON or len(up) < 3:
        return token
    if up.isdigit() is False and re.fullmatch(r"\d+[O]\d*|\d*[O]\d+", up) and sum(c.isdigit() for c in up) >= 2:
        return up.replace("O", "0")  # "29O" -> "290"
    letters = sum(ch.isalpha() for ch in up)
    if 1 <= letters < len(up):  # digits inside a word: 10T, SET1A, 5ELANGOR
        for table in (_LOOKALIKE_TO_LETTER, _LOOKALIKE_TO_L):
            mapped = up.translate(table)
            if mapped in LEXICON:
                return mapped
    if letters == len(up):
        fixed = _edit1_match(up) or _split_glued(up) or _split_affix(up) or _segment(up)
        if fixed:
            return fixed
    return token


def correct_text(text: str | None, *, store_name: bool = False) -> str | None:
    """Apply the corrections to a store name (``store_name=True``) or address line."""
    if not text:
        return text
    # (no space is put after commas: the labels copy "7/4,KAWASAN" as printed)
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = re.sub(r"(?<!\d)(\d{5})(?=[A-Za-z]{2,})", r"\1 ", text)  # "53200KUALA" -> "53200 KUALA"
    text = _GLUED_SUFFIX.sub(r" \1", text)
    text = _SDN_BHD.sub(lambda m: m.group(0) if m.group(0).upper() == "SDN BHD" else "SDN BHD", text)
    # a bracket glued to a word gets its space, as the labels write it: "ENTERPRISE (SETIA ALAM) SDN"
    text = re.sub(r"(?<=[A-Za-z0-9])\(", " (", text)
    text = re.sub(r"\)(?=[A-Za-z0-9])", ") ", text)
    if store_name:
        text = _SB_MISREAD.sub(" S/B", text)
    return _TOKEN.sub(lambda m: correct_token(m.group(0)), text)
