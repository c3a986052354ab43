"""Candidates and their features for the learned line picker.

For each field the parser has a set of candidates and the picker scores each one:

- store name: spans of 1-3 consecutive header lines, also with a trailing company
  registration number ("(519537-X)") cut off; the picker is offered only those that are not cut
  inside the name and hold no other detail (``offered_companies``; none: no store name);
- address: spans of 1-6 consecutive lines near the top, also with the last line cut
  before "TEL"/"FAX"/"GST"; offered only those without a contact, tax, registration, notice or
  owner detail (``offered_addresses``);
- total: every amount printed on the page, with its line's label;
- date: every date printed on the page.

Features are layout (position, font height, centring, neighbours) plus keyword flags.
They are plain floats in a dict, so the feature list is stored with the weights and
training and inference cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from statistics import median

from extractor.ocr import patterns
from extractor.ocr.layout import Line
from extractor.ocr.parser import Candidate

HEADER_LINES = 18  # the store name and address are printed in the first lines
MAX_COMPANY_SPAN, MAX_ADDRESS_SPAN = 3, 6
_REG_TAIL = re.compile(r"[\s(\[]*(?:CO\.?\s*)?(?:REG\.?|RFG|NO\.?|ROC)?\s*[:.]?\s*\(?\s*"
                       r"[A-Z]{0,3}\d{4,}[\s\-‐·.]?[A-Z]?\s*\)?.*$", re.IGNORECASE)
_LEADING_NOISE = re.compile(r"^(?:[\W\d_]+\s+|[\W_]+)")  # a sign or serial number: "#000002 BAIFU", "*** NAME"
_NUMBERED_NAME = re.compile(r"^\d{1,3}\s+[A-Z]", re.IGNORECASE)  # a short number in the name: "99 SPEED MART"
_AFTER_SUFFIX = re.compile(r"^(.*\b(?:SDN\.?\s?BHD|BHD|S/B|ENTERPRISE|TRADING|CO\.)\.?)(.*)$", re.IGNORECASE)
_OWNED_BY = re.compile(r"^.*?\b(?:OWNED BY|OWN BY|OWNER BY|DIMILIKI(?: OLEH)?|OPERATED BY)\s*:?\s*",
                       re.IGNORECASE)
_CONTACT_WORDS = r"\b(TEL|FAX|PHONE|H/P|HP|MOBILE|WHATSAPPS?|HOTLINE|GST|SST|EMAIL|E-MAIL)\b"
_STOP_TAIL = re.compile(r"\s*[,(]?\s*" + _CONTACT_WORDS + r".*$", re.IGNORECASE)
# A contact or tax detail, also misread or glued ("Te1 No.:", "GSTID:"), or a phone number ("03-5542 3228")
_CONTACT = (_CONTACT_WORDS + r"|\bGST|\bT[E3][L1I]\b"
            r"|(?<![\d.])\+?6?0\d{1,2}[- ]?\d{3,4}[- ]?\d{3,4}(?![\d.])")
# A notice to the customer or the document's title, in no store name or address
_NOTICE = (r"THANK|\bTQ\b|FOR SHOPPING|GOODS SOLD|RETURNABLE|REFUNDABLE|EXCHANGEABLE|REDEEM|WELCOME|\bPLEASE\b|"
           r"TAX INVOICE|RECEIPT|CASHIER")
# the company's registration: "Company No: 1234567-V" (also misread), "Co. Reg", "ROC", "123456-X"
_REGISTRATION = (r"\bC[O0][MN]PANY\s*(?:REG\w*\.?\s*)?N[O0]\b|\bCO\.?\s*REG|\bROC\b"
                 r"|\bREG(?:ISTRATION)?\.?\s*N[O0]\b|\b\d{5,}-[A-Z]\b")
# What no address holds (none of the 626 sroie-dev address labels does): a contact or tax detail, an
# e-mail or web address, since parser-v10 the company's registration and a notice, and who owns, licenses
# or runs the store ("Licensee of McDonald's", "formerly known as")
_NOT_IN_ADDRESS = re.compile(_CONTACT + r"|@|\bWWW\b|HTTP|\.COM\b|" + _REGISTRATION + "|" + _NOTICE +
                             r"|LICENSEE|FRANCHISEE|\b(?:OWNED|OWN|OWNER|OPERATED|MANAGED)\s+BY\b|DIMILIKI|FORMERLY"
                             r"|SUBSIDIARY", re.IGNORECASE)
_STRONG_SUFFIX = re.compile(r"\b(SDN\.?\s?BHD|BHD|S/B|SB|ENTERPRISE|TRADING|PLT|CO\.|COMPANY)\b\.?",
                            re.IGNORECASE)
_STATES = re.compile(r"\b(SELANGOR|JOHOR|KUALA LUMPUR|PUTRAJAYA|PAHANG|PERAK|MELAKA|MALACCA|KEDAH|PENANG|"
                     r"PULAU PINANG|SABAH|SARAWAK|NEGERI SEMBILAN|KELANTAN|TERENGGANU|PERLIS|"
                     r"D\.?\s?E\.?|DARUL EHSAN|DARUL TAKZIM|WILAYAH PERSEKUTUAN|W\.?P\.?)\b", re.IGNORECASE)
_ADDR_WORDS = re.compile(r"\b(" + "|".join(re.escape(w.strip()) for w in patterns.ADDRESS_WORDS) + r")\b",
                         re.IGNORECASE)


@dataclass
class Page:
    """Page-level statistics the features are relative to."""

    lines: Sequence[Line]
    x0: float
    x1: float
    y0: float
    y1: float
    line_height: float

    @classmethod
    def of(cls, lines: Sequence[Line]) -> Page:
        return cls(lines=lines, x0=min(ln.x0 for ln in lines), x1=max(ln.x1 for ln in lines),
                   y0=min(ln.y0 for ln in lines), y1=max(ln.y1 for ln in lines),
                   line_height=median(ln.height for ln in lines) or 1.0)

    @property
    def width(self) -> float:
        return max(self.x1 - self.x0, 1.0)

    @property
    def height(self) -> float:
        return max(self.y1 - self.y0, 1.0)


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def _frac(n: float, d: float) -> float:
    return n / d if d else 0.0


def line_features(page: Page, i: int) -> dict[str, float]:
    """What one line looks like, relative to the page."""
    ln = page.lines[i]
    text = ln.text
    up = text.upper()
    n = max(len(text), 1)
    return {
        "idx": min(i, 30) / 30, "y": (ln.y0 - page.y0) / page.height,
        "height": ln.height / page.line_height,
        "centre": abs((ln.x0 + ln.x1) / 2 - (page.x0 + page.x1) / 2) / page.width,
        "width": (ln.x1 - ln.x0) / page.width, "left": (ln.x0 - page.x0) / page.width,
        "chars": min(len(text), 60) / 60, "letters": _frac(_letters(text), n),
        "digits": _frac(sum(ch.isdigit() for ch in text), n),
        "upper": _frac(sum(ch.isupper() for ch in text), max(_letters(text), 1)),
        "boxes": min(len(ln.boxes), 4) / 4, "score": ln.score,
        "suffix": float(bool(_STRONG_SUFFIX.search(up))),
        "suffix_end": float(bool(re.search(r"(SDN\.?\s?BHD|BHD|S/B|ENTERPRISE|TRADING)\W*$", up))),
        "company_word": float(any(w in up for w in patterns.COMPANY_SUFFIXES)),
        "reg": float(bool(patterns.REGISTRATION_RE.search(text))),
        "addr_words": min(len(_ADDR_WORDS.findall(up)), 3) / 3,
        "postcode": float(bool(patterns.POSTCODE_RE.search(up))),
        "state": float(bool(_STATES.search(up))),
        "stop": float(bool(patterns.ADDRESS_STOP_RE.search(up))),
        "contact": float(bool(patterns.CONTACT_RE.search(up))),
        "phone": float(bool(re.search(r"\d{2,3}-?\s?\d{3,4}\s?\d{3,4}", up)) and "TEL" in up),
        "starts_no": float(bool(re.match(r"\s*(NO|LOT|G|B|UNIT|\d)", up))),
        "ends_comma": float(text.rstrip().endswith(",")),
        "noise": float(_letters(text) < 3),
        "amount": float(bool(patterns.amounts_in(text))),
        "date": float(bool(patterns.DATE_RE.search(text))),
    }


def _neighbour(page: Page, i: int, cache: dict[int, dict[str, float]]) -> dict[str, float]:
    if i < 0 or i >= len(page.lines):
        return {}
    if i not in cache:
        cache[i] = line_features(page, i)
    return cache[i]


# --- store name --------------------------------------------------------------------
def company_candidates(page: Page) -> list[Candidate]:
    cache: dict[int, dict[str, float]] = {}
    out = []
    head = min(len(page.lines), HEADER_LINES)
    first_text_line = next((i for i in range(head) if _letters(page.lines[i].text) >= 3), 0)
    for i in range(head):
        for j in range(i + 1, min(i + MAX_COMPANY_SPAN, head) + 1):
            span = page.lines[i:j]
            text = " ".join(ln.text for ln in span)
            variants = [(text, 0.0, 0.0)]
            cut = _REG_TAIL.sub("", span[-1].text).strip()
            if cut and cut != span[-1].text.strip() and _letters(cut) >= 2:
                variants.append((" ".join([ln.text for ln in span[:-1]] + [cut]), 1.0, 0.0))
            for value, _trimmed, _ in list(variants):
                tail = _AFTER_SUFFIX.match(value)  # "YONG CEN ENTERPRISE POSTED", "... SDN BHD (1"
                if tail and tail.group(2).strip() and len(tail.group(2).strip()) <= 12:
                    variants.append((tail.group(1).strip(), 1.0, 0.0))
            for value, trimmed, _ in list(variants):
                # "000002 BAIFU (M) SDN BHD", "*** NAME"; not the number a line starts its name with
                head_cut = value if _NUMBERED_NAME.match(span[0].text) else _LEADING_NOISE.sub("", value)
                owner = _OWNED_BY.sub("", value)  # "OWN BY: CHEF LEE SDN BHD", "Dimiliki: ..."
                for cut_value in sorted({head_cut, owner} - {value}):  # sorted: the same order in every process
                    if _letters(cut_value) >= 3:
                        variants.append((cut_value, trimmed, 1.0))
            for value, trimmed, lead_trimmed in variants:
                if _letters(value) < 2:
                    continue
                f = _span_features(page, i, j, cache)
                f["trimmed"] = trimmed
                f["lead_trimmed"] = lead_trimmed
                f["first_text_line"] = float(i == first_text_line)
                f["before_first_text"] = float(i < first_text_line)
                f["value_suffix_end"] = float(bool(re.search(
                    r"(SDN\.?\s?BHD|BHD|S/B|ENTERPRISE|TRADING)\W*$", value.upper())))
                f["value_len"] = min(len(value), 60) / 60
                out.append(Candidate(value=value, line=i, text=value, ocr_score=min(ln.score for ln in span),
                                     extra={"lines": list(range(i, j)), "features": f}))
    return out


def _span_features(page: Page, i: int, j: int, cache) -> dict[str, float]:
    first, last = _neighbour(page, i, cache), _neighbour(page, j - 1, cache)
    inner = [_neighbour(page, k, cache) for k in range(i, j)]
    before, after = _neighbour(page, i - 1, cache), _neighbour(page, j, cache)
    f: dict[str, float] = {"span": (j - i) / MAX_ADDRESS_SPAN, f"span{min(j - i, 4)}": 1.0}
    for key in ("idx", "y", "height", "centre", "width", "suffix", "suffix_end", "company_word", "reg",
                "addr_words", "postcode", "state", "stop", "starts_no", "noise", "amount", "date",
                "letters", "digits", "upper", "chars", "score", "phone", "ends_comma"):
        f[f"first_{key}"] = first.get(key, 0.0)
        f[f"last_{key}"] = last.get(key, 0.0)
        f[f"mean_{key}"] = sum(x.get(key, 0.0) for x in inner) / len(inner)
        f[f"max_{key}"] = max(x.get(key, 0.0) for x in inner)
        f[f"before_{key}"] = before.get(key, -1.0 if not before else 0.0)
        f[f"after_{key}"] = after.get(key, -1.0 if not after else 0.0)
    heights = [x["height"] for x in inner]
    f["height_spread"] = max(heights) - min(heights)
    return f


# What no store name does (none of the 626 sroie-dev store-name labels does either): start or end on a
# joining word or sign, or stop inside brackets a line beside it opens or closes ("HOME MASTER HARDWARE &"
# / "ELECTRICAL", "THE COFFEE BEAN" / "& TEA LEAF (M) SDN BHD.", "ENTERPRISE (SETIA" / "ALAM) SDN BHD");
# hold a notice to the customer or the document's title ("GOODS SOLD ARE NOT RETURNABLE", "TQ FOR SHOPPING
# WITH ...", "*REDEEM VOUCHER ...*"), a web address, a contact or tax detail, a postcode, an amount or a
# date; be a street line ("K3-113, JL IBRAHIM SULTAN", "NO 5 JALAN ..."), only a place ("JOHOR BAHRU") or
# only a word of the receipt's body ("CASH")
_JOIN_END = re.compile(r"(?:[&@(（]|\bAND)\W*$", re.IGNORECASE)
_JOIN_START = re.compile(r"^\W*?(?:&|\bAND\b)", re.IGNORECASE)
# a legal form ends a name: a span that starts on one began on the line before ("AIK HUAT HARDWARE" /
# "ENTERPRISE (SETIA ALAM) SDN BHD")
_FORM_START = re.compile(r"^\W*(?:SDN\b|BHD\b|S/B\b|ENTERPRISES?\b|CO\.)", re.IGNORECASE)
_NOT_IN_NAME = re.compile(_NOTICE + r"|\bWWW\b|HTTP|" + _CONTACT + "|" + _REGISTRATION + r"|(?<!\d)\d{5}(?!\d)",
                          re.IGNORECASE)
_UNIT = r"[A-Z]{0,2}\d+[A-Z]?(?:[-/]\d+[A-Z]?)*"
_STREET = re.compile(r"^\W*(?:NO\.?\s*|LOT\s*|UNIT\s*)?" + _UNIT + r"\s*,|(?:^|\s)(?:NO\.?\s*|LOT\s*)?" + _UNIT
                     + r",?\s+(?:JALAN|JLN|JL|LORONG|PERSIARAN)\b", re.IGNORECASE)
_PLACE = re.compile(r"(?:\s|" + _STATES.pattern + r"|\b(?:KUALA|LUMPUR|BAHRU|SHAH|ALAM|PETALING|SUBANG|PUCHONG|"
                    r"KLANG|CHERAS|KAJANG|AMPANG|MALAYSIA)\b|[^\w\s])+", re.IGNORECASE)
_BODY_WORD = re.compile(r"\W*(?:CASH|CHANGE|TOTAL|SUB\s?TOTAL|AMOUNT|QTY|PRICE|ITEMS?|DESCRIPTION|RM|TAX|DISCOUNT|"
                        r"ROUNDING|BALANCE|PAID|TENDER|VISA|CARD)\W*", re.IGNORECASE)


# only the label of a number: "Company" (left of "Company No : SA0099552-P" once the number is cut), "Ref No: 0"
_ID_LABEL = re.compile(r"\W*(?:COMPANY|CO\.?\s*REG|REG|REF|ROC|RECEIPT|BILL|SLIP|INVOICE|DOC|ORDER|TABLE)\.?"
                       r"\s*(?:NO|NUMBER|#)?\.?\s*[:.#]?[\d\W]*", re.IGNORECASE)


def not_a_name(value: str) -> bool:
    """Whether a store-name candidate's text holds what no name holds (a detail, a street, a place...)."""
    return bool(_NOT_IN_NAME.search(value) or patterns.amounts_in(value) or patterns.DATE_RE.search(value)
                or _STREET.search(value) or _PLACE.fullmatch(value) or _BODY_WORD.fullmatch(value)
                or _ID_LABEL.fullmatch(value))


def _open_brackets(text: str) -> tuple[int, int]:
    """(closing brackets with no opening one before them, opening brackets left unclosed)."""
    unopened = depth = 0
    for ch in text:
        if ch in "(（":
            depth += 1
        elif ch in ")）":
            unopened, depth = (unopened + 1, depth) if depth == 0 else (unopened, depth - 1)
    return unopened, depth


def cut_through(page: Page, cand: Candidate) -> bool:
    """Whether a store-name candidate stops inside the name: it starts or ends on a joining word or
    sign ("&", "AND", "@", "("; also its first line, where a leading sign was trimmed), starts on a
    legal form ("SDN BHD", "ENTERPRISE", "CO.": the name began on the line before), or it closes a
    bracket the line before it opens, opens one the line after it closes, or was trimmed inside a
    bracket its own lines close."""
    lines = cand.extra["lines"]
    if _JOIN_END.search(cand.value) or _JOIN_START.search(cand.value) or _JOIN_START.search(
            page.lines[lines[0]].text) or _FORM_START.search(cand.value):
        return True
    unopened, unclosed = _open_brackets(cand.value)
    if unclosed > _open_brackets(" ".join(page.lines[k].text for k in lines))[1]:
        return True  # a trim cut the bracket's end off: "(TONYMOLY SHOP (95874))" -> "(TONYMOLY SHOP"
    before = page.lines[lines[0] - 1].text if lines[0] > 0 else ""
    after = page.lines[lines[-1] + 1].text if lines[-1] + 1 < len(page.lines) else ""
    return bool((unopened and _open_brackets(before)[1]) or (unclosed and _open_brackets(after)[0]))


def offered_companies(page: Page, cands: Sequence[Candidate]) -> list[Candidate]:
    """The store-name candidates the picker chooses from: none that stops inside the name
    (``cut_through``) or holds what no name holds (``not_a_name``). Where that leaves none (a name
    printed as a logo the OCR cannot read: only the address, phones and till lines are left), the
    receipt has no store name, and the pipeline's required-field check sends it to review. Training
    sees every span, as the ones not to choose."""
    return [c for c in cands if not cut_through(page, c) and not not_a_name(c.value)]


# --- address -------------------------------------------------------------------------
def address_candidates(page: Page, company_lines: Sequence[int]) -> list[Candidate]:
    cache: dict[int, dict[str, float]] = {}
    out = []
    head = min(len(page.lines), HEADER_LINES + 4)
    company_end = max(company_lines) + 1 if company_lines else 0
    company_start = min(company_lines) if company_lines else 0
    for i in range(head):
        for j in range(i + 1, min(i + MAX_ADDRESS_SPAN, head) + 1):
            span = page.lines[i:j]
            if i < company_end and j > company_start:
                continue  # the address does not overlap the chosen store name
            if any(patterns.amounts_in(ln.text) or patterns.DATE_RE.search(ln.text) for ln in span[1:-1]):
                break  # an amount or a date inside: items or the receipt details, not an address
            text = " ".join(ln.text for ln in span)
            variants = [(text, 0.0)]
            cut = _STOP_TAIL.sub("", span[-1].text).strip()
            if cut and cut != span[-1].text.strip():
                variants.append((" ".join([ln.text for ln in span[:-1]] + [cut]), 1.0))
            for value, trimmed in variants:
                f = _span_features(page, i, j, cache)
                gap = i - company_end
                f.update({"trimmed": trimmed, "after_company": float(gap == 0),
                          "gap1": float(gap == 1), "gap_more": float(gap > 1),
                          "above_company": float(j <= company_start),
                          "value_postcode_end": float(bool(re.search(r"\d{5}\W*(\w+\W*){0,4}$", value))),
                          "value_state": float(bool(_STATES.search(value.upper()))),
                          "value_stop": float(bool(patterns.ADDRESS_STOP_RE.search(value.upper()))),
                          "value_contact": float(bool(patterns.CONTACT_RE.search(value))),
                          "value_len": min(len(value), 160) / 160})
                out.append(Candidate(value=value, line=i, text=value, ocr_score=min(ln.score for ln in span),
                                     extra={"lines": list(range(i, j)), "features": f}))
    return out


def offered_addresses(cands: Sequence[Candidate]) -> list[Candidate]:
    """The address candidates the picker chooses from: none that holds what an address never does
    (``_NOT_IN_ADDRESS``, SROIE's convention): a contact or tax detail ("... 40170 SETIA ALAM Mobile
    /Whatsapps : +6012-...", "..., JOHOR. Te1 No.: 07-...", "GSTID:0010...", an e-mail address), the
    company's registration, a notice to the customer, the store's owner or licensee (the span cut
    before a detail is a candidate of its own); all of them if each does. Training sees them all, as
    the spans not to choose."""
    return [c for c in cands if not _NOT_IN_ADDRESS.search(c.value)] or list(cands)


# --- total ---------------------------------------------------------------------------
_KW = {
    "kw_total": r"T\s?O\s?T\s?A\s?L|JUMLAH|[TI1][O0U][TI1][A4][L1I]\b",
    "kw_total_misread": r"\b[TFIL1][O0U][TFIL1][A4][L1I]\b",
    "kw_payable": r"PAYABLE|TO BE PAID|TO PAY|AMOUNT DUE|AMT DUE|BALANCE DUE", "kw_percent": r"\d\s?%",
    "kw_supplies": r"SUPPL|SUMMARY|ZERO|EXEMPT", "kw_after": r"\bAFTER|\bATF|FINAL", "kw_sub": r"SUB\s?-?\s?T\s?O\s?T",
    "kw_round": r"ROUND",
    "kw_rounded": r"ROUNDED|ROUNDING\s*TOTAL|TOTAL\s*ROUND", "kw_adj": r"ADJ",
    "kw_nett": r"NET", "kw_grand": r"GRAND", "kw_incl": r"INCL|INC\.|INCLUSIVE",
    "kw_excl": r"EXCL|EXCLUSIVE|BEFORE",
    "kw_gst": r"GST|SST|TAX|VAT", "kw_cash": r"CASH|TUNAI", "kw_change": r"CHANGE|BAKI|BALANCE",
    "kw_tender": r"TENDER|PAID|PAYMENT|VISA|MASTER|CARD|CREDIT|DEBIT", "kw_qty": r"QTY|QUANTITY|ITEM|PCS",
    "kw_disc": r"DISC|SAVING|VOUCHER|LESS", "kw_amount": r"AMOUNT|AMT",
    "kw_due": r"DUE|PAYABLE|TO BE PAID|TO PAY",
    "kw_rm": r"\bRM|MYR", "kw_price": r"PRICE|@|\bX\b",
}
_KW_RE = {k: re.compile(v, re.IGNORECASE) for k, v in _KW.items()}


def _keyword_flags(text: str, prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(bool(r.search(text))) for k, r in _KW_RE.items()}


def _change_lines(page: Page, cands: Sequence[Candidate]) -> set[int]:
    return {c.line for c in cands if _KW_RE["kw_change"].search(page.lines[c.line].text)}


def _on_paid_line(page: Page, c: Candidate, change_lines: set[int]) -> bool:
    """A cash / tender line, or the line just above a CHANGE line ("Accepted total 10.00")."""
    own = page.lines[c.line].text
    return bool(_KW_RE["kw_cash"].search(own) or _KW_RE["kw_tender"].search(own)) or c.line + 1 in change_lines


def _paid_minus_change(page: Page, cands: Sequence[Candidate]) -> set[Decimal]:
    """Amounts paid less change given: the cash / tender lines, or the line just above a
    CHANGE line ("Accepted total 10.00 / Change 5.00"), minus the change."""
    change_lines = _change_lines(page, cands)
    paid = [c.value for c in cands if _on_paid_line(page, c, change_lines)]
    change = [c.value for c in cands if c.line in change_lines]
    return {a - b for a in paid for b in change}


def tendered(page: Page, cands: Sequence[Candidate]) -> list[Candidate]:
    """The amounts tendered: on a cash / tender line or the line just above a CHANGE line,
    and such that the amount less a non-zero change printed below it on a CHANGE line is
    another amount of the page ("Amount Incl. GST 5.00 / Accepted total 10.00 / Change
    5.00"). That is the customer's money, not the total, whatever its line's label says."""
    change_lines = _change_lines(page, cands)
    changes = [c for c in cands if c.line in change_lines and c.value > 0]
    return [c for c in cands
            if c.line not in change_lines and _on_paid_line(page, c, change_lines)
            and any(ch.line > c.line and any(d.value == c.value - ch.value and d.line not in (c.line, ch.line)
                                             for d in cands) for ch in changes)]


_CHANGE = re.compile(r"(?<!EX)CHANGE|\bBAKI\b", re.IGNORECASE)  # not "EXCHANGE", nor BALANCE (also "BALANCE DUE")


def given_change(page: Page, cands: Sequence[Candidate]) -> list[Candidate]:
    """The change given back: a positive amount on a CHANGE (BAKI) line such that an amount paid
    above it, less it, is another amount of the page within the 5-sen rounding (0.02): "TOTAL 2.56 /
    CASH 50.55 / ROUNDING 0.01- / CHANGE DUE 48.00". Never the total, whatever else its line says
    ("DUE"); where the change equals the total, the total's own line is still offered."""
    change_lines = {c.line for c in cands if _CHANGE.search(page.lines[c.line].text)}
    paid_lines = _change_lines(page, cands)
    paid = [c for c in cands if c.line not in change_lines and _on_paid_line(page, c, paid_lines)]
    return [ch for ch in cands if ch.line in change_lines and ch.value > 0 and any(
        p.line < ch.line and p.value > ch.value and any(
            abs(d.value - (p.value - ch.value)) <= Decimal("0.02") and d.line not in (p.line, ch.line) for d in cands)
        for p in paid)]


def offered_totals(page: Page, cands: Sequence[Candidate]) -> list[Candidate]:
    """The total candidates the picker chooses from: all but the amounts tendered and the change
    given (all of them if every amount looks like one or the other)."""
    paid = {id(c) for c in tendered(page, cands)} | {id(c) for c in given_change(page, cands)}
    return [c for c in cands if id(c) not in paid] or list(cands)


def _arithmetic(cands: Sequence[Candidate], total_lines: set[int]) -> dict[int, dict[str, float]]:
    """Which amounts are the result of two amounts printed above them (a + b, a - b:
    "SUB-TOTAL 57.00 / DISCOUNT 17.40 / GRAND TOTAL 39.60", "6% SUPPLIES 32.05 / 0%
    SUPPLIES 19.83 / PAYABLE 51.88") and which are operands of such a result below."""
    nonzero = [c for c in cands if abs(c.value) >= Decimal("0.05")]  # not 5-sen roundings
    out = {id(c): {"sum_of_above": 0.0, "difference_of_above": 0.0, "operand_of_below": 0.0,
                   "result_of_total_line": 0.0} for c in cands}
    for c in nonzero:
        above = [a for a in nonzero if a.line < c.line and a.value != c.value]
        for a in above:
            for b in above:
                if b.line == a.line or b is a:
                    continue
                if a.value + b.value == c.value and a.line < b.line:
                    out[id(c)]["sum_of_above"] = 1.0
                elif a.value - abs(b.value) == c.value:
                    out[id(c)]["difference_of_above"] = 1.0
                else:
                    continue
                out[id(a)]["operand_of_below"] = out[id(b)]["operand_of_below"] = 1.0
                if a.line in total_lines:
                    out[id(c)]["result_of_total_line"] = 1.0
    return out


def total_features(page: Page, cands: Sequence[Candidate]) -> None:
    """Add a feature dict to each amount candidate (in place)."""
    if not cands:
        return
    values = sorted({c.value for c in cands}, reverse=True)
    counts: dict = {}
    for c in cands:
        counts[c.value] = counts.get(c.value, 0) + 1
    n_lines = len(page.lines)
    paid_minus_change = _paid_minus_change(page, cands)
    total_lines = [c.line for c in cands if _KW_RE["kw_total"].search(page.lines[c.line].text)]
    arithmetic = _arithmetic(cands, set(total_lines)) if len(cands) <= 60 else {}
    cents = {c.value: int(abs(c.value) * 100) for c in cands}
    # Malaysian cash totals are rounded to 5 sen: "TOTAL 25.44 ... AMOUNT TO BE PAID 25.45"
    rounds_other = {c.value for c in cands if cents[c.value] % 5 == 0 and any(
        0 < abs(c.value - d.value) <= Decimal("0.02") and cents[d.value] % 5 for d in cands)}
    has_rounded_twin = {d.value for d in cands if cents[d.value] % 5 and any(
        0 < abs(c.value - d.value) <= Decimal("0.02") and cents[c.value] % 5 == 0 for c in cands)}
    for c in cands:
        ln = page.lines[c.line]
        own = ln.text
        prev = page.lines[c.line - 1].text if c.line > 0 else ""
        amounts_here = patterns.amounts_in(own) or [str(c.value)]
        rank = values.index(c.value)
        f = {"bias": 1.0, "y": (ln.y0 - page.y0) / page.height,
             "from_bottom": min(n_lines - 1 - c.line, 30) / 30,
             "height": ln.height / page.line_height, "right": (ln.x1 - page.x0) / page.width,
             "rank0": float(rank == 0), "rank1": float(rank == 1), "rank2": float(rank == 2),
             "log_value": math.log1p(float(abs(c.value))) / 8, "zero": float(c.value == 0),
             "count": min(counts[c.value], 5) / 5,
             "last_in_line": float(c.extra["position_in_line"] == len(amounts_here) - 1),
             "n_in_line": min(len(amounts_here), 4) / 4, "own_label": float(c.extra["own_label"]),
             "cash_minus_change": float(c.value in paid_minus_change),
             "round5": float(int(c.value * 100) % 5 == 0), "score": c.ocr_score,
             "negative": float(bool(re.search(r"-\s?(RM)?\s?" + re.escape(str(c.value)), own))),
             "last_total_line": float(bool(total_lines) and c.line == max(total_lines)),
             "first_total_line": float(bool(total_lines) and c.line == min(total_lines)),
             "total_line_below": float(any(t > c.line for t in total_lines)),
             "no_letters": float(_letters(own) <= 2),
             "rounds_other": float(c.value in rounds_other),
             "has_rounded_twin": float(c.value in has_rounded_twin), "loose": float(bool(c.extra.get("loose"))),
             "signed": float(bool(c.extra.get("signed"))),
             **arithmetic.get(id(c), {})}
        f.update(_keyword_flags(own, "own_"))
        f.update(_keyword_flags(prev, "prev_"))
        c.extra["features"] = f


_DATE_KW = {
    "kw_date_fuzzy": r"D\s?[A4]\s?[TI1]\s?[E3F]|TRH|" + patterns.DATE_WORDS,
    "kw_invoice": r"INVOICE|RECEIPT|BILL|INV\b|DOC",
    "kw_expiry": r"EXP|VALID|UNTIL|BEFORE", "kw_due_word": r"\bDUE\b", "kw_print": r"PRINT",
    "kw_check": r"CHECK|CLOSED|OPEN|IN\b|OUT\b|TIME", "kw_member": r"MEMBER|CARD|POINT|JOIN|SINCE|BIRTH",
}
_DATE_KW_RE = {k: re.compile(v, re.IGNORECASE) for k, v in _DATE_KW.items()}


_GST_START = date(2015, 4, 1)
# the line ends in the word for "date" just before the candidate ("DATE:", "Tarikh :")
_DATE_RIGHT_BEFORE = re.compile(r"(?:D\s?[A4]\s?[TI1]\s?[E3F]|" + patterns.DATE_WORDS + r")\W*$")


def _names_date(text: str) -> bool:
    """The line has the word DATE (also inside 'UPDATED', as ever) or its Malay / Indonesian word."""
    return "DATE" in text or patterns.DATE_WORD_RE.search(text) is not None


def date_features(page: Page, cands: Sequence[Candidate]) -> None:
    if not cands:
        return
    counts: dict = {}
    for c in cands:
        counts[c.value] = counts.get(c.value, 0) + 1
    first_line = min(c.line for c in cands)
    latest, earliest = max(c.value for c in cands), min(c.value for c in cands)
    per_line = {c.line: sum(d.line == c.line for d in cands) for c in cands}
    gst = any(re.search(r"\bGST\b", ln.text, re.IGNORECASE) for ln in page.lines)
    for k, c in enumerate(cands):
        own = page.lines[c.line].text.upper()
        prev = page.lines[c.line - 1].text.upper() if c.line > 0 else ""
        nxt = page.lines[c.line + 1].text.upper() if c.line + 1 < len(page.lines) else ""
        before = own[:max(own.find(c.text.upper()), 0)]
        f = {"bias": 1.0, "y": (page.lines[c.line].y0 - page.y0) / page.height,
             "first": float(k == 0), "first_line": float(c.line == first_line),
             "count": min(counts[c.value], 4) / 4, "kw_date": float(_names_date(own)),
             "prev_date": float(_names_date(prev)), "has_time": float(bool(patterns.TIME_RE.search(own))),
             "next_time": float(bool(patterns.TIME_RE.search(nxt))),
             "kw_due": float(bool(re.search(r"DUE|EXP|VALID|PRINT", own))),
             "iso": float(bool(re.match(r"\d{4}", c.text))),
             "month_name": float(bool(re.search(r"[A-Z]{3}", c.text.upper()))),
             "two_digit_year": float(bool(re.search(r"[-/.]\d{2}$", c.text))),
             "compact": float(bool(c.extra.get("compact"))), "loose": float(bool(c.extra.get("loose"))),
             "signed": float(bool(c.extra.get("signed"))),
             "latest": float(c.value == latest), "earliest": float(c.value == earliest),
             "n_in_line": min(per_line[c.line], 3) / 3, "score": c.ocr_score,
             "year_misread": float(bool(c.extra.get("year_misread"))),
             # Malaysia charged GST from 2015-04-01 to 2018-08-31: a GST receipt is not older
             "before_gst": float(gst and c.value < _GST_START),
             "date_right_before": float(bool(_DATE_RIGHT_BEFORE.search(before)))}
        f.update({f"own_{n}": float(bool(r.search(own))) for n, r in _DATE_KW_RE.items()})
        f.update({f"prev_{n}": float(bool(r.search(prev))) for n, r in _DATE_KW_RE.items()})
        c.extra["features"] = f
