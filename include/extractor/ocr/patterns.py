"""Regular expressions and keyword lists for reading receipt lines.

Kept apart from the parser so the line picker's features and the parser's rules use
the same definitions.
"""

from __future__ import annotations

import re

# English month names, read as the start of a word: "MARCH", "SEPT.", and the Malay and
# Indonesian names that start like them (JANUARI, FEBRUARI, MARET, APRIL, JUN, JUNI, JULAI...).
MONTH_NAMES = r"JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|SEPT|OCT|NOV|DEC"
# The Malay and Indonesian names that do not, read only as whole words: "MAC" and "DIS" start
# "MACHINE" and "DISCOUNT". normalize.MONTHS maps every name to its month.
LOCAL_MONTH_NAMES = r"MAC|MEI|OGOS|AGUSTUS|AGT|OKTOBER|OKT|DISEMBER|DIS|DESEMBER|DES"
_LOCAL_MONTH = r"(?<![A-Z])(?:" + LOCAL_MONTH_NAMES + r")(?![A-Z])"
DATE_RE = re.compile(
    r"(?<!\d)(?:"
    r"(?P<iso>20\d{2}[-/.]\d{1,2}[-/.]\d{1,2})"
    r"|(?P<dmy>\d{1,2}\s?(?P<sep>[-/.])\s?\d{1,2}\s?(?P=sep)\s?(?:20)?\d{2})"
    r"|(?P<dmon>\d{1,2}[-/ .]?(?:" + MONTH_NAMES + r")[A-Z]*[-/ .,]*(?:20)?\d{2})"
    r"|(?P<mond>(?:" + MONTH_NAMES + r")[A-Z]*\.?\s?\d{1,2},?\s?(?:20)?\d{2})"
    # the local names: the year is not an amount's whole part ("1 DIS 20.00", "DIS 5 12.50"), and
    # "OGOS 2017" is a month and year, not 20 August 2017 (the day is set off from the year)
    r"|(?P<dmon_local>\d{1,2}[-/ .]?" + _LOCAL_MONTH + r"[-/ .,]*(?:20)?\d{2}(?![.,]\d))"
    r"|(?P<mond_local>" + _LOCAL_MONTH + r"\.?\s?\d{1,2}(?:,\s?|\s)(?:20)?\d{2}(?![.,]\d))"
    r")(?!\d)", re.IGNORECASE)
# The Malay (TARIKH, TRKH) and Indonesian (TANGGAL, TGL) words for "date", wherever the
# English DATE is looked for near a date; the short forms only as whole words.
DATE_WORDS = r"TARIKH|TANGGAL|(?<![A-Z])(?:TRKH|TGL)(?![A-Z])"
DATE_WORD_RE = re.compile(DATE_WORDS, re.IGNORECASE)
# The recogniser drops the space between a date and its time: "16-04-201814:51",
# "25 Mar 20189:27PM", "27/06/185:02:32 PM" (year, then a time of one or two hour digits),
# and "18:1524/05/18" (a time, then the date).
GLUED_TIME_RE = re.compile(r"((?:19|20)\d{2}|(?<=[-/.]\d{2}[-/.])\d{2}|(?<=[-/.])\d{2}(?=\d{2}:))"
                           r"(\d{1,2}:\d{2})")
TIME_THEN_DATE_RE = re.compile(r"(\d{1,2}:\d{2})(\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?!\d)")
COMPACT_DATE_RE = re.compile(r"(?<![\d:])((?:0[1-9]|[12]\d|3[01])(?:0[1-9]|1[0-2])20[0-3]\d)(?![\d:])")
COMPACT_ISO_RE = re.compile(r"(?<![\d:])(20[0-3]\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?![\d:])")
# Misread separators ("05~05-17", "05 02-18", "2504/2017") or digits glued on the left
# ("#19536001/06/2018"): read as dates too, flagged ``loose`` for the picker to weigh.
LOOSE_DATE_RE = re.compile(r"(0[1-9]|[12]\d|3[01])\s?[-/.~ ]?\s?(0[1-9]|1[0-2])"
                           r"\s?[-/.~]\s?(20[1-3]\d|[1-3]\d)(?![\d:])")
# A time has a colon ("14:03", "2:03:55 PM"); "2.03" is an amount unless AM/PM follows.
TIME_RE = re.compile(r"(?<![\d.,])([01]?\d|2[0-3])(?::([0-5]\d)(?::[0-5]\d)?\s*(?:AM|PM|A\.M\.|P\.M\.)?"
                     r"|\.([0-5]\d)\s*(?:AM|PM))(?![\d])", re.IGNORECASE)
# An amount as printed on these receipts: digits, a decimal point (or comma), two digits.
AMOUNT_RE = re.compile(r"(?<![\d.,])-?(?:RM|\$)?\s?(\d{1,3}(?:,\d{3})+|\d+)\s?[.,]\s?(\d{2})(?![\d])")
# The decimal point misread as a dash or colon at the end of a total line ("NET TOTAL 19-80",
# "TOTAL 7-00"): read only on lines that print no regular amount, flagged for the picker.
LOOSE_AMOUNT_RE = re.compile(r"(?<![\d.,:/-])(?:RM|\$)?\s?(\d{1,4})\s?[-:~]\s?(\d{2})\W*$", re.IGNORECASE)
PHONE_RE = re.compile(r"(?:TEL|PHONE|PH|HP|H/P|T)\s*[.:/]?\s*(?:NO)?\s*[.:]?\s*"
                      r"(\+?6?0\d[\d\s-]{6,12}\d)", re.IGNORECASE)
RECEIPT_NO_RE = re.compile(
    r"(?:RECEIPT|INVOICE|INV|BILL|DOC(?:UMENT)?|TRANS(?:ACTION)?|CS|SLIP|TAX INVOICE)\s*"
    r"(?:NO|NUMBER|#)\s*[.:#]?\s*[:#]?\s*([A-Z0-9][A-Z0-9/-]{3,})", re.IGNORECASE)

COMPANY_SUFFIXES = ("SDN BHD", "SDN. BHD", "SDN.BHD", "S/B", "BHD", "ENTERPRISE", "TRADING",
                    "RESTAURANT", "RESTORAN", "HARDWARE", "STATIONERY", "MART", "MARKET",
                    "PERNIAGAAN", "CO.", "COMPANY", "PLT", "STORE", "SUPERMARKET", "BAKERY",
                    "CAFE", "KEDAI", "SHOP", "CENTRE", "CENTER", "FOOD", "HOLDINGS", "(M)")
ADDRESS_WORDS = ("JALAN", "JLN", "LOT", "NO.", "NO ", "TAMAN", "TMN", "BANDAR", "KAWASAN",
                 "LORONG", "PERSIARAN", "BLOK", "BLOCK", "BATU", "KAMPUNG", "KG", "SEKSYEN",
                 "SELANGOR", "JOHOR", "KUALA LUMPUR", "PUTRAJAYA", "PAHANG", "PERAK", "MELAKA",
                 "KEDAH", "PENANG", "PULAU PINANG", "SABAH", "SARAWAK", "NEGERI SEMBILAN",
                 "KELANTAN", "TERENGGANU", "PERLIS", "WILAYAH", "BAHRU", "SHAH ALAM", "PETALING",
                 "SUBANG", "PUCHONG", "KLANG", "CHERAS", "KAJANG", "AMPANG", "INDUSTRIAL",
                 "PERINDUSTRIAN", "PLAZA", "MALL", "FLOOR", "TINGKAT", "GROUND", "ROAD", "STREET",
                 "AVENUE", "BDR", "JAYA", "UTAMA", "SRI", "SERI")
POSTCODE_RE = re.compile(r"(?<!\d)\d{5}(?!\d)")
# Lines that end an address block (contact and tax details follow the address).
ADDRESS_STOP_RE = re.compile(
    r"\b(TEL|FAX|PHONE|H/P|HP|GST|SST|REG|INVOICE|RECEIPT|DATE|CASHIER|EMAIL|E-MAIL|WEBSITE|WWW|"
    r"TAX|BILL|TABLE|ORDER|COUNTER|SLIP)\b", re.IGNORECASE)
# Contact lines that also end an address ("Mobile / Whatsapps : +6012-...", "HOTLINE 1300...").
CONTACT_RE = re.compile(r"\b(MOBILE|WHATSAPPS?|HOTLINE)\b", re.IGNORECASE)
REGISTRATION_RE = re.compile(r"^\(?\s*(?:CO\.?\s*(?:REG|RFG|NO)|COMPANY\s*(?:REG|NO)|ROC|REG)?[^A-Z]*"
                             r"\d{4,}[- ]?[A-Z]\)?\s*$|\b\d{5,}-[A-Z]\b", re.IGNORECASE)

TOTAL_WORDS_RE = re.compile(r"T\s?O\s?T\s?A\s?L|JUMLAH|AMOUNT DUE|NETT|NET AMT|GRAND|AMT DUE|"
                            r"TOTAL PAYABLE|BALANCE DUE|AMOUNT", re.IGNORECASE)
NOT_TOTAL_RE = re.compile(r"SUB\s?-?\s?TOTAL|TOTAL\s*(QTY|QUANTITY|ITEM|ITEMS|DISC|DISCOUNT|SAVING|"
                          r"GST|TAX|SST|EXCL|EXCLUSIVE|EXCLUDING)|QTY|ITEM\(S\)|EXCL|BEFORE",
                          re.IGNORECASE)
ROUNDED_RE = re.compile(r"ROUNDED|NETT|GRAND|PAYABLE|DUE|INCL|TOTAL\s*\(?RM|TOTAL\s*AMOUNT", re.IGNORECASE)
ADJUSTMENT_RE = re.compile(r"ROUNDING|ADJ|CHANGE|CASH|TENDER|DISC|SAVING|GST|TAX|SST|VOUCHER|POINTS",
                           re.IGNORECASE)
PAYMENT_RE = re.compile(r"\b(CASH|VISA|MASTER|MASTERCARD|CREDIT|DEBIT|CARD|TNG|BOOST|GRABPAY|"
                        r"E-?WALLET|CHANGE|TENDER(?:ED)?|PAID|PAYMENT)\b", re.IGNORECASE)
SUBTOTAL_RE = re.compile(r"SUB\s?-?\s?TOTAL|TOTAL\s*EXCL|EXCLUD", re.IGNORECASE)
TAX_RE = re.compile(r"\b(GST|SST|TAX|VAT)\b", re.IGNORECASE)


def loose_amount_in(text: str) -> str | None:
    """'19.80' from a total line that ends in '19-80' and has no regular amount, else None."""
    if not TOTAL_WORDS_RE.search(text) or amounts_in(text):
        return None
    m = LOOSE_AMOUNT_RE.search(text)
    return f"{int(m.group(1))}.{m.group(2)}" if m else None


def negative_totals_in(text: str) -> list[str]:
    """Amounts printed with a minus on a total line ('Total Payable: -1.73', a credit note)
    as '-1.73'; ``amounts_in`` reads every amount unsigned."""
    if not TOTAL_WORDS_RE.search(text) or NOT_TOTAL_RE.search(text) or ADJUSTMENT_RE.search(text):
        return []  # "Total Savings -1.10", "TOTAL DISCOUNT -5.00", "Rounding Adj -0.02" are not totals
    return [f"-{int(m.group(1).replace(',', ''))}.{m.group(2)}" for m in AMOUNT_RE.finditer(text)
            if m.group(0).startswith("-")]


def amounts_in(text: str) -> list[str]:
    """Amount strings in a line, normalised to '1234.50' (commas as thousands marks)."""
    found = []
    for m in AMOUNT_RE.finditer(text):
        whole = m.group(1).replace(",", "")
        found.append(f"{int(whole)}.{m.group(2)}")
    return found
