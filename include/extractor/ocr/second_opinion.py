"""A second reading of the store name and address where the first one is doubtful.

RapidOCR recognises crops of the page it detected on, which the backend shrinks to
1280 px on the longer side, and the detector's boxes sit tight on the glyphs. Where
the picker is unsure of a field, or one of the chosen lines' boxes was read with a low
score, those boxes are read again by the same recogniser (no other model to load),
cropped from the full-resolution image with a margin around the box, and the picker
chooses again from the mended lines. Each box keeps the reading with the higher
recogniser score, so a re-read replaces a box only where the recogniser itself is surer
of the new reading.

``tesseract_reader`` (Tesseract 5 on the same crops) is the alternative the bench
compares against (``bench/ocr_accuracy.py table --second-opinion tesseract``); the
backend does not use it (docs/ocr.md: no gain, far more CPU). The re-read costs one
recognition call per doubtful box; the bench caches the re-reads per receipt and box so
that the cross-validation stays fast.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from extractor.ocr import patterns
from extractor.ocr.layout import Line, PlacedBox

# boxes -> one (text, score) per box, in order
Reader = Callable[[Sequence[PlacedBox]], list[tuple[str, float]]]
FIELDS = ("store_name", "store_address")
# a line that names a date or prints part of one: re-read when the page gave no date
_DATE_LINE = re.compile(r"D\s?A\s?T\s?E|" + patterns.DATE_WORDS + r"|\d{1,2}\s?[-/.]\s?\w{1,3}\s?[-/.]\s?\d",
                        re.IGNORECASE)


@dataclass(frozen=True)
class SecondOpinionSettings:
    """When a field is doubtful, and how its boxes are cropped for the re-read.

    ``min_probability`` and ``min_box_score`` trade CPU against accuracy: below either,
    the field's boxes are read again. The defaults were set by cost (about a third of
    the receipts re-read, a few hundredths of a CPU-second each on average); docs/ocr.md
    compares them with re-reading more. ``margin`` is the crop's margin around the box, in box heights."""

    min_probability: float = 0.8
    min_box_score: float = 0.95
    margin: float = 0.15
    max_boxes: int = 12


def doubtful(prob: float, lines: Sequence[Line], settings: SecondOpinionSettings) -> bool:
    """The picker is unsure of the field, or one of its boxes was read with a low score."""
    return prob < settings.min_probability or any(
        b.score < settings.min_box_score for ln in lines for b in ln.boxes)


def merge_readings(first: PlacedBox, second: tuple[str, float]) -> PlacedBox:
    """The box with whichever reading the recogniser is surer of (the first on a tie)."""
    text, score = second
    if text.strip() and score > first.score:
        return replace(first, text=text, score=score)
    return first


def second_opinion(lines: Sequence[Line], picks: dict[str, tuple[Any, float]], pick: Callable,
                   reader: Reader, settings: SecondOpinionSettings) -> dict[str, tuple[Any, float]]:
    """``picks`` with the store name and address picked again from re-read lines where
    either was doubtful, and the date from re-read date lines where the first read gave
    no date at all (``pick``: lines -> picks, the picker on the mended page)."""
    chosen: set[int] = set()
    for name in FIELDS:
        cand, prob = picks.get(name, (None, 1.0))
        if cand is not None and doubtful(prob, [lines[i] for i in cand.extra["lines"]], settings):
            chosen.update(cand.extra["lines"])
    fields = FIELDS
    if "date" in picks and picks["date"][0] is None:  # no date read at all: "DATE: 20/03/201", "2S/12/2017"
        fields += ("date",)
        chosen.update(ln.index for ln in lines if _DATE_LINE.search(ln.text))
    if not chosen:
        return picks
    mended = list(lines)
    for ln in reread_lines([lines[i] for i in sorted(chosen)], reader, settings):
        mended[ln.index] = ln
    again = pick(mended)
    return {**picks, **{name: again[name] for name in fields}}


def reread_lines(lines: Sequence[Line], reader: Reader, settings: SecondOpinionSettings) -> list[Line]:
    """``lines`` with every box read a second time and merged with its first reading."""
    boxes = [b for ln in lines for b in ln.boxes if b.points][:settings.max_boxes]
    readings = dict(zip(map(id, boxes), reader(boxes), strict=True)) if boxes else {}
    return [Line(boxes=[merge_readings(b, readings[id(b)]) if id(b) in readings else b for b in ln.boxes],
                 index=ln.index) for ln in lines]


# --- readers ------------------------------------------------------------------------
def crop_box(image: Any, points: Sequence[tuple[float, float]], margin: float):
    """The box cut out of ``image`` (an RGB array) and turned upright, with ``margin``
    box heights added on every side."""
    import numpy as np
    from rapidocr.utils.process_img import get_rotate_crop_image

    pts = np.asarray(points, dtype=np.float32)
    across, down = pts[1] - pts[0], pts[3] - pts[0]
    height = float(np.linalg.norm(down))
    across /= max(float(np.linalg.norm(across)), 1e-6)
    down /= max(height, 1e-6)
    sign_x = np.array([-1, 1, 1, -1], dtype=np.float32)[:, None]
    sign_y = np.array([-1, -1, 1, 1], dtype=np.float32)[:, None]
    grown = pts + margin * height * (sign_x * across + sign_y * down)
    h, w = image.shape[:2]
    grown[:, 0] = grown[:, 0].clip(0, w - 1)
    grown[:, 1] = grown[:, 1].clip(0, h - 1)
    return get_rotate_crop_image(image, grown.astype(np.float32))


def rapid_reader(engine, image: Any, margin: float) -> Reader:
    """Re-read boxes with the backend's own RapidOCR recogniser, cropped from the
    full-resolution image (``image``: PIL image or RGB array)."""
    import numpy as np
    from rapidocr.ch_ppocr_rec import TextRecInput

    page = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)

    def read(boxes: Sequence[PlacedBox]) -> list[tuple[str, float]]:
        out = engine.text_rec(TextRecInput(img=[crop_box(page, b.points, margin) for b in boxes]))
        return [(str(t), float(s)) for t, s in zip(out.txts, out.scores, strict=True)]

    return read


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


def tesseract_reader(image: Any, margin: float, timeout: float = 10.0) -> Reader:
    """Re-read boxes with Tesseract 5 (the ``tesseract`` program, one line per call).
    Its confidence (0-100, mean over words) is scaled to 0-1 to compare with RapidOCR's."""
    import numpy as np
    from PIL import Image

    page = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)

    def one(box: PlacedBox) -> tuple[str, float]:
        crop = Image.fromarray(crop_box(page, box.points, margin)).convert("L")
        if crop.height < 40:  # Tesseract reads best at ~30 px capitals
            crop = crop.resize((max(1, round(crop.width * 40 / crop.height)), 40), Image.LANCZOS)
        import io

        buf = io.BytesIO()
        crop.save(buf, "PNG")
        proc = subprocess.run(["tesseract", "-", "-", "--psm", "7", "-l", "eng", "tsv"], input=buf.getvalue(),
                              capture_output=True, timeout=timeout, env={"OMP_THREAD_LIMIT": "1"}, check=False)
        return _tsv_reading(proc.stdout.decode("utf-8", "replace"))

    return lambda boxes: [one(b) for b in boxes]


def _tsv_reading(tsv: str) -> tuple[str, float]:
    words, confs = [], []
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) == 12 and cols[11].strip() and float(cols[10]) >= 0:
            words.append(cols[11].strip())
            confs.append(float(cols[10]) / 100)
    return " ".join(words), (sum(confs) / len(confs) if confs else 0.0)


def cached_reader(make_reader: Callable[[], Reader], path: Path) -> Reader:
    """A reader whose readings are kept in a JSON file keyed by box corners (the bench's
    cache beside the OCR cache); ``make_reader`` (which opens the image) is called only
    for boxes not read before."""
    store: dict[str, list] = json.loads(path.read_text()) if path.exists() else {}
    made: list[Reader] = []

    def key(box: PlacedBox) -> str:
        return ";".join(f"{x:.0f},{y:.0f}" for x, y in box.points)

    def read(boxes: Sequence[PlacedBox]) -> list[tuple[str, float]]:
        todo = [b for b in boxes if key(b) not in store]
        if todo:
            made[:] = made or [make_reader()]
            for box, reading in zip(todo, made[0](todo), strict=True):
                store[key(box)] = list(reading)
            path.write_text(json.dumps(store))
        return [tuple(store[key(b)]) for b in boxes]

    return read
