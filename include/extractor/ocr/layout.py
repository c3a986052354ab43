"""Text lines rebuilt from OCR boxes by position, after undoing the page's skew.

The detector returns one box per run of text; a receipt line ("TOTAL ..... 60.30") is
often two or three boxes far apart. Boxes are rotated by the page's skew (estimated
from the top edges of wide boxes), then grouped into lines by vertical overlap and
ordered left to right. Everything is plain Python: a receipt has a few dozen boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median

from extractor.ocr.engine import OcrBox

MAX_SKEW_DEGREES = 15.0  # beyond this the box corners are not a reliable skew estimate


@dataclass
class PlacedBox:
    """An OCR box in de-skewed page coordinates."""

    text: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float
    points: tuple[tuple[float, float], ...] = ()  # the box in image coordinates (for a re-read)

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


@dataclass
class Line:
    """One printed line: its boxes left to right, the joined text, and its geometry."""

    boxes: list[PlacedBox] = field(default_factory=list)
    index: int = 0

    @property
    def text(self) -> str:
        return " ".join(b.text.strip() for b in self.boxes if b.text.strip())

    @property
    def x0(self) -> float:
        return min(b.x0 for b in self.boxes)

    @property
    def x1(self) -> float:
        return max(b.x1 for b in self.boxes)

    @property
    def y0(self) -> float:
        return min(b.y0 for b in self.boxes)

    @property
    def y1(self) -> float:
        return max(b.y1 for b in self.boxes)

    @property
    def height(self) -> float:
        return median(b.height for b in self.boxes)

    @property
    def score(self) -> float:
        """Character-weighted mean recognition score of the line's boxes."""
        weights = [max(len(b.text), 1) for b in self.boxes]
        return sum(b.score * w for b, w in zip(self.boxes, weights, strict=True)) / sum(weights)


def estimate_skew(boxes: Sequence[OcrBox]) -> float:
    """The page's rotation in degrees, as the length-weighted median angle of the boxes'
    top edges (image coordinates, y down: positive means lines run down to the right)."""
    angles: list[tuple[float, float]] = []
    for box in boxes:
        (xa, ya), (xb, yb) = box.points[0], box.points[1]
        length = math.hypot(xb - xa, yb - ya)
        if length < 40 or xb <= xa:  # short boxes give noisy angles
            continue
        angle = math.degrees(math.atan2(yb - ya, xb - xa))
        if abs(angle) <= MAX_SKEW_DEGREES:
            angles.append((angle, length))
    if not angles:
        return 0.0
    angles.sort()
    half, acc = sum(w for _, w in angles) / 2, 0.0
    for angle, weight in angles:
        acc += weight
        if acc >= half:
            return angle
    return angles[-1][0]


def place_boxes(boxes: Sequence[OcrBox], skew_degrees: float | None = None) -> list[PlacedBox]:
    """Rotate every box by minus the skew and return its axis-aligned extent."""
    angle = estimate_skew(boxes) if skew_degrees is None else skew_degrees
    c, s = math.cos(math.radians(-angle)), math.sin(math.radians(-angle))
    placed = []
    for box in boxes:
        pts = [(x * c - y * s, x * s + y * c) for x, y in box.points]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        placed.append(PlacedBox(text=box.text, score=box.score,
                                x0=min(xs), y0=min(ys), x1=max(xs), y1=max(ys), points=box.points))
    return placed


def _overlap(line: Line, box: PlacedBox) -> float:
    """Vertical overlap of a box with a line's core, relative to the smaller height.

    The line's extent is the median of its boxes' tops and bottoms, so one tall box
    does not swallow the lines above and below it."""
    top = median(b.y0 for b in line.boxes)
    bottom = median(b.y1 for b in line.boxes)
    inter = min(bottom, box.y1) - max(top, box.y0)
    return inter / max(min(bottom - top, box.height), 1.0)


def group_lines(placed: Sequence[PlacedBox], min_overlap: float = 0.5) -> list[Line]:
    """Group de-skewed boxes into lines (top to bottom), each ordered left to right.

    Boxes are visited by vertical centre; a box joins the open line it overlaps most
    (at least ``min_overlap`` of the smaller height) unless it would overlap a box
    already in that line horizontally (two boxes side by side cannot be one above the
    other)."""
    lines: list[Line] = []
    for box in sorted(placed, key=lambda b: b.cy):
        best, best_overlap = None, min_overlap
        for line in lines[-6:]:  # only recent lines can still overlap a lower box
            ov = _overlap(line, box)
            if ov >= best_overlap and not any(
                    min(b.x1, box.x1) - max(b.x0, box.x0) > 0.3 * min(b.x1 - b.x0, box.x1 - box.x0)
                    for b in line.boxes):
                best, best_overlap = line, ov
        if best is None:
            lines.append(Line(boxes=[box]))
        else:
            best.boxes.append(box)
    for line in lines:
        line.boxes.sort(key=lambda b: b.x0)
    lines.sort(key=lambda ln: median(b.cy for b in ln.boxes))
    for i, line in enumerate(lines):
        line.index = i
    return lines


MIN_BOX_SCORE = 0.3  # boxes the recogniser is less sure of are mostly stains and logos


def rebuild_lines(boxes: Sequence[OcrBox], min_score: float = 0.0) -> list[Line]:
    """OCR boxes -> de-skewed text lines, dropping boxes below ``min_score``."""
    kept = [b for b in boxes if b.score >= min_score and b.text.strip()]
    if not kept:
        return []
    return group_lines(place_boxes(kept))


def lines_text(lines: Sequence[Line]) -> str:
    """The reconstructed page, one line per row (kept as ``raw_text`` for audit)."""
    return "\n".join(line.text for line in lines)
