"""OCR correction towards the lexicon: fixes the usual slips, leaves real words alone."""

import pytest

from extractor.ocr.lexicon import correct_text


@pytest.mark.parametrize("raw, fixed", [
    ("10T 1851-A, JALAN KPB 6", "LOT 1851-A, JALAN KPB 6"),       # digits read for letters
    ("41150 KLANG, SCLANGOR", "41150 KLANG, SELANGOR"),            # one misread letter
    ("12 JAIAN TAMPOI", "12 JALAN TAMPOI"),
    ("SHH MOTOR RENGITSDNBHD", "SHH MOTOR RENGIT SDN BHD"),         # glued suffix
    ("NO 290. JALANAIR PANAS", "NO 290. JALAN AIR PANAS"),         # glued prefix
    ("43200 CHERASSELANGOR", "43200 CHERAS SELANGOR"),
    ("52200Kuala Lumpur.", "52200 Kuala Lumpur."),                 # postcode glued to the city
    ("NO 29O, JALAN", "NO 290, JALAN"),                            # O read for 0 in a number
    ("Simpàng Off Batu", "Simpang Off Batu"),                      # stray accents
])
def test_corrections(raw, fixed):
    assert correct_text(raw) == fixed


@pytest.mark.parametrize("text", [
    "JALAN PERMAS 10/7 BANDAR BARU PERMAS JAYA",   # PERMAS is one edit from PERMAI: left alone
    "LOT P.T. 2811, JALAN ANGSA",                  # ANGSA / WANGSA
    "12, Jalan Tampoi 7/4,Kawasan Perindustrian",  # glued commas stay (labels copy them)
    "MR D.I.Y. (M) SDN BHD",
])
def test_correct_text_is_left_alone(text):
    assert correct_text(text) == text


def test_empty_values():
    assert correct_text(None) is None and correct_text("") == ""
