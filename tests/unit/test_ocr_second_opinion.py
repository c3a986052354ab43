"""The second opinion: doubtful store names and addresses read again (fake readers for the
logic; the real RapidOCR recogniser and, where installed, Tesseract on a rendered line)."""

import pytest
from PIL import Image, ImageDraw, ImageFont

from extractor.ocr.layout import PlacedBox
from extractor.ocr.parser import parse_receipt
from extractor.ocr.picker import load_default_picker
from extractor.ocr.second_opinion import (
    SecondOpinionSettings,
    cached_reader,
    doubtful,
    merge_readings,
    rapid_reader,
    reread_lines,
    tesseract_available,
    tesseract_reader,
)
from extractor.testing.ocr_lines import lines_from_text

GARBLED = """
GARDENLA BAKERIES (KL) SDN BHD
(139386 X)
LOT 3, JALAN PELABUR 23/1,
40300 SHAH ALAM, SELANGOR.
TEL: 03-55423228
INVOICE NO: 7818F701
DATE: 10/03/2018
TOTAL PAYABLE   21.60
"""


def _box(text: str, score: float) -> PlacedBox:
    return PlacedBox(text=text, score=score, x0=0, y0=0, x1=100, y1=20,
                     points=((0, 0), (100, 0), (100, 20), (0, 20)))


def test_merge_keeps_the_reading_the_recogniser_is_surer_of():
    first = _box("GARDENLA", 0.91)
    assert merge_readings(first, ("GARDENIA", 0.97)).text == "GARDENIA"
    assert merge_readings(first, ("GARDEN1A", 0.80)) is first
    assert merge_readings(first, ("  ", 0.99)) is first  # an empty re-read never wins


def test_a_field_is_doubtful_by_pick_probability_or_box_score():
    lines = lines_from_text("AEON CO. (M) BHD")
    settings = SecondOpinionSettings(min_probability=0.9, min_box_score=0.97)
    assert not doubtful(0.95, lines, settings)  # boxes of lines_from_text score 0.98
    assert doubtful(0.5, lines, settings)
    assert doubtful(0.95, lines, SecondOpinionSettings(min_box_score=0.99))


def test_reread_lines_reads_each_box_once_and_keeps_line_order():
    lines = lines_from_text("NO.5: JALAN SAGU   18\nTAMAN DAYA,")
    seen = []

    def reader(boxes):
        seen.extend(b.text for b in boxes)
        return [(b.text.replace("NO.5:", "NO.53"), 0.999) for b in boxes]

    mended = reread_lines(lines, reader, SecondOpinionSettings())
    assert seen == ["NO.5: JALAN SAGU", "18", "TAMAN DAYA,"]
    assert [ln.text for ln in mended] == ["NO.53 JALAN SAGU 18", "TAMAN DAYA,"]
    assert [ln.index for ln in mended] == [ln.index for ln in lines]


def test_a_doubtful_store_name_is_picked_again_from_the_reread_lines():
    lines = lines_from_text(GARBLED)
    calls = []

    def reader(boxes):
        calls.append([b.text for b in boxes])
        return [(b.text.replace("GARDENLA", "GARDENIA"), 0.999) for b in boxes]

    picker = load_default_picker()
    always = SecondOpinionSettings(min_probability=1.01)
    parsed = parse_receipt(lines, picker=picker, reader=reader, second_opinion=always)
    assert parsed.values["store_name"] == "GARDENIA BAKERIES (KL) SDN BHD"
    assert calls and any("GARDENLA BAKERIES (KL) SDN BHD" in c for c in calls)
    first = parse_receipt(lines, picker=picker)
    assert first.values["store_name"] == "GARDENLA BAKERIES (KL) SDN BHD"
    assert parsed.values["total"] == first.values["total"] and parsed.values["date"] == first.values["date"]

    calls.clear()  # nothing doubtful: no re-read at all
    never = SecondOpinionSettings(min_probability=0.0, min_box_score=0.0)
    assert parse_receipt(lines, picker=picker, reader=reader, second_opinion=never).values == first.values
    assert calls == []


def test_a_page_without_a_date_has_its_date_lines_read_again():
    lines = lines_from_text(GARBLED.replace("DATE: 10/03/2018", "DATE: 10/03/201"))
    reader_calls = []

    def reader(boxes):
        reader_calls.append([b.text for b in boxes])
        return [(b.text.replace("10/03/201", "10/03/2018"), 0.999) for b in boxes]

    picker, never = load_default_picker(), SecondOpinionSettings(min_probability=0.0, min_box_score=0.0)
    assert parse_receipt(lines, picker=picker).values.get("date") is None
    parsed = parse_receipt(lines, picker=picker, reader=reader, second_opinion=never)
    assert parsed.values["date"].isoformat() == "2018-03-10"
    assert reader_calls == [["DATE: 10/03/201"]]  # only the date line: the names were not doubtful


@pytest.mark.parametrize("word", ["Date", "Tarikh", "TRKH", "Tanggal", "TGL"])
def test_a_line_the_malay_or_indonesian_word_labels_is_a_date_line(word):
    lines = lines_from_text(GARBLED.replace("DATE: 10/03/2018", f"{word}: 1O MAC 2O18"))
    reader_calls = []

    def reader(boxes):
        reader_calls.append([b.text for b in boxes])
        return [(b.text.replace("O", "0"), 0.999) for b in boxes]

    picker, never = load_default_picker(), SecondOpinionSettings(min_probability=0.0, min_box_score=0.0)
    parsed = parse_receipt(lines, picker=picker, reader=reader, second_opinion=never)
    assert parsed.values["date"].isoformat() == "2018-03-10"
    assert reader_calls == [[f"{word}: 1O MAC 2O18"]]


def test_cached_reader_reads_a_box_only_once(tmp_path):
    made = []

    def make():
        made.append(1)
        return lambda boxes: [(b.text.lower(), 0.5) for b in boxes]

    path = tmp_path / "r.json"
    box = _box("ABC", 0.9)
    assert cached_reader(make, path)([box]) == [("abc", 0.5)]
    assert cached_reader(make, path)([box]) == [("abc", 0.5)]  # a new reader: from the file
    assert made == [1]


def _rendered_line(text: str):
    font = ImageFont.load_default(size=26)
    image = Image.new("RGB", (520, 80), "white")
    ImageDraw.Draw(image).text((30, 25), text, fill="black", font=font)
    left, top, right, bottom = ImageDraw.Draw(image).textbbox((30, 25), text, font=font)
    return image, PlacedBox(text="?", score=0.5, x0=left, y0=top, x1=right, y1=bottom,
                            points=((left, top), (right, top), (right, bottom), (left, bottom)))


def test_rapid_reader_reads_a_line_from_the_full_image():
    from extractor.ocr.engine import build_engine

    image, box = _rendered_line("TAMAN JOHOR JAYA")
    [(text, score)] = rapid_reader(build_engine(), image, margin=0.15)([box])
    assert text.replace(" ", "") == "TAMANJOHORJAYA" and 0.5 < score <= 1.0


@pytest.mark.skipif(not tesseract_available(), reason="the tesseract program is not installed "
                    "(apt-get install tesseract-ocr tesseract-ocr-eng)")
def test_tesseract_reader_reads_a_line():
    image, box = _rendered_line("TAMAN JOHOR JAYA")
    [(text, score)] = tesseract_reader(image, margin=0.15)([box])
    assert text.replace(" ", "") == "TAMANJOHORJAYA" and 0.5 < score <= 1.0
