"""The ``ocr`` backend: RapidOCR on CPU plus a layout-aware receipt parser.

preprocess: bytes -> a greyscale-safe RGB image (``decode_image`` refuses bad files).
forward:    RapidOCR (PP-OCR detection + recognition, onnxruntime) on every image of
            the batch, two images at a time on two single-threaded workers: both cores
            busy without the overhead of intra-op threading (see docs/ocr.md).
postprocess: boxes -> de-skewed lines -> the shipped line picker chooses store name,
            address, date and total -> ``Receipt`` with per-field confidence.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from extractor.backends.base import Backend
from extractor.errors import ConfigError, ParseError
from extractor.ocr import PARSER_VERSION
from extractor.ocr.engine import OcrBox, OcrSettings, build_engine, run_ocr
from extractor.ocr.layout import MIN_BOX_SCORE, Line, lines_text, rebuild_lines
from extractor.ocr.parser import parse_receipt
from extractor.ocr.second_opinion import SecondOpinionSettings, rapid_reader
from extractor.schema import Receipt
from extractor.spec import OCR_FAST_REVISION, ExtractorSpec

# What an ``ocr`` spec's revision runs: the rapidocr wheel's version, plus what its reader
# does differently from the default (the revision is in the extractor version, so every row
# names the reader that made it). Measurements: docs/ocr.md.
READERS: dict[str, tuple[OcrSettings, SecondOpinionSettings | None]] = {
    "3.10.0": (OcrSettings(), SecondOpinionSettings()),
    # the cut head alone (~110 MiB less peak, ~10 % less CPU; address exact -0.5 on unseen stores)
    "3.10.0+latin-head": (OcrSettings(rec_head="latin"), SecondOpinionSettings()),
    OCR_FAST_REVISION: (OcrSettings(rec_head="latin", rec_min_width=160), None),
}
_FROM_SPEC: Any = object()  # the second opinion the spec's revision names


def reader_settings(spec: ExtractorSpec) -> tuple[OcrSettings, SecondOpinionSettings | None]:
    """The OCR settings and second opinion that ``spec``'s revision names, or ``ConfigError``."""
    try:
        return READERS[spec.revision or ""]
    except KeyError:
        raise ConfigError(f"this build has no OCR reader for revision {spec.revision!r}; "
                          f"known: {', '.join(sorted(READERS))}") from None


@dataclass
class OcrPage:
    """What the forward step produced for one image (and the image, for a re-read)."""

    boxes: list[OcrBox]
    lines: list[Line]
    image: Any = None


class OCRBackend(Backend):
    """RapidOCR + receipt parser. The engine is loaded once, in the constructor.

    ``settings`` and ``second_opinion`` default to what the spec's revision names
    (``READERS``); benchmarks pass others."""

    def __init__(self, spec: ExtractorSpec, model_dir: str | None = None, *,
                 settings: OcrSettings | None = None, workers: int | None = None,
                 use_picker: bool = True, second_opinion: SecondOpinionSettings | None = _FROM_SPEC):
        super().__init__(spec)
        if spec.prompt_version != PARSER_VERSION:
            # the lineage on every row must name the parser that really ran
            raise ConfigError(f"this build ships OCR parser {PARSER_VERSION!r}, the spec asks for "
                              f"{spec.prompt_version!r}; roll back by installing the release "
                              f"that shipped it")
        spec_settings, spec_second_opinion = reader_settings(spec)
        self.settings = settings or spec_settings
        if second_opinion is _FROM_SPEC:
            second_opinion = spec_second_opinion
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self.engine = build_engine(self.settings)
        self.picker = None
        if use_picker:
            from extractor.ocr.picker import load_default_picker

            self.picker = load_default_picker()
        # re-read doubtful store names and addresses (None: never; docs/ocr.md has the costs)
        self.second_opinion = second_opinion if self.picker is not None else None
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ocr") if self.workers > 1 else None

    def _ocr_one(self, image: Any) -> OcrPage | BaseException:
        try:
            boxes = run_ocr(self.engine, image)
        except (RuntimeError, ValueError, MemoryError) as exc:  # onnxruntime / cv2 failures
            return exc
        return OcrPage(boxes=boxes, lines=rebuild_lines(boxes, min_score=MIN_BOX_SCORE),
                       image=image if self.second_opinion is not None else None)

    def _forward(self, images: list[Any]) -> list[OcrPage | BaseException]:
        if self._pool is None or len(images) == 1:
            return [self._ocr_one(im) for im in images]
        return list(self._pool.map(self._ocr_one, images))

    def _postprocess(self, raw: OcrPage) -> Receipt:
        if not raw.lines:
            raise ParseError("no text found on the image", raw_text=None)
        reader = None
        if raw.image is not None and self.second_opinion is not None:
            image, margin = raw.image, self.second_opinion.margin
            reader = lambda boxes: rapid_reader(self.engine, image, margin)(boxes)  # noqa: E731 - built on use
        parsed = parse_receipt(raw.lines, picker=self.picker, reader=reader, second_opinion=self.second_opinion)
        raw.image = None  # the re-reads are done: do not hold the image any longer
        return Receipt(**{k: v for k, v in parsed.values.items() if v is not None},
                       confidence=parsed.confidence)

    def raw_text(self, raw: Any) -> str | None:
        if isinstance(raw, OcrPage):
            return lines_text(raw.lines) or None
        return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
