"""Lines rebuilt from OCR boxes: skew estimation, grouping, ordering."""

import math

import pytest

from extractor.ocr.engine import OcrBox
from extractor.ocr.layout import estimate_skew, lines_text, rebuild_lines

# (text, x, y, width) on a page; every box is 20 px high, rows 30 px apart
PAGE = [
    ("ACME TRADING SDN BHD", 120, 10, 260),
    ("NO 5, JALAN MAWAR,", 130, 40, 240),
    ("TOTAL", 20, 100, 80), ("60.30", 400, 100, 70),
    ("CASH", 20, 130, 60), ("70.00", 400, 130, 70),
]


def boxes(rows=PAGE, angle=0.0, height=20.0, score=0.99):
    """Boxes of ``rows`` rotated by ``angle`` degrees about the origin (as a skewed scan)."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    out = []
    for text, x, y, w in rows:
        corners = [(x, y), (x + w, y), (x + w, y + height), (x, y + height)]
        out.append(OcrBox(points=tuple((px * c - py * s, px * s + py * c) for px, py in corners),
                          text=text, score=score))
    return out


def test_straight_page_groups_boxes_into_lines():
    lines = rebuild_lines(boxes())
    assert lines_text(lines).splitlines() == [
        "ACME TRADING SDN BHD", "NO 5, JALAN MAWAR,", "TOTAL 60.30", "CASH 70.00"]
    assert [ln.index for ln in lines] == [0, 1, 2, 3]
    assert lines[2].x0 == pytest.approx(20) and lines[2].x1 == pytest.approx(470)


@pytest.mark.parametrize("angle", [-6.0, -3.0, 2.0, 5.0])
def test_skewed_page_is_straightened(angle):
    skewed = boxes(angle=angle)
    assert estimate_skew(skewed) == pytest.approx(angle, abs=0.01)
    # 5 degrees over 450 px lifts "60.30" by ~40 px: more than a row, so without the
    # de-skew it would land on the wrong line
    assert lines_text(rebuild_lines(skewed)).splitlines()[2:] == ["TOTAL 60.30", "CASH 70.00"]


def test_boxes_side_by_side_vertically_never_merge():
    rows = [("ITEM A", 20, 100, 100), ("ITEM B", 20, 112, 100)]  # overlapping rows, same column
    assert len(rebuild_lines(boxes(rows))) == 2


def test_low_score_and_empty_boxes_are_dropped():
    noisy = boxes() + [OcrBox(points=((0, 200), (50, 200), (50, 220), (0, 220)), text="~~", score=0.1),
                       OcrBox(points=((0, 260), (50, 260), (50, 280), (0, 280)), text="  ", score=0.9)]
    assert len(rebuild_lines(noisy, min_score=0.3)) == 4
    assert rebuild_lines([]) == []


def test_line_score_is_character_weighted():
    mixed = [OcrBox(points=((0, 0), (100, 0), (100, 20), (0, 20)), text="AAAAAAAAA", score=1.0),
             OcrBox(points=((200, 0), (220, 0), (220, 20), (200, 20)), text="B", score=0.0)]
    [line] = rebuild_lines(mixed)
    assert line.score == pytest.approx(0.9)
