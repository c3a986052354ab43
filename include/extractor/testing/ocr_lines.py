"""Reconstructed OCR lines from plain text, for parser tests that need no OCR."""

from __future__ import annotations

from extractor.ocr.engine import OcrBox
from extractor.ocr.layout import Line, rebuild_lines


def lines_from_text(text: str, width: int = 480) -> list[Line]:
    """One box per text run; runs on a line are separated by 3+ spaces, the last one
    right-aligned (as amounts are on a till receipt)."""
    out = []
    for row, line in enumerate(t for t in text.strip("\n").splitlines()):
        runs = [r.strip() for r in line.split("   ") if r.strip()]
        y = 30 * row
        for i, run in enumerate(runs):
            w = 12 * len(run)
            x = width - w if (i == len(runs) - 1 and len(runs) > 1) else 10 + 200 * i
            out.append(OcrBox(points=((x, y), (x + w, y), (x + w, y + 22), (x, y + 22)), text=run,
                              score=0.98))
    return rebuild_lines(out)
