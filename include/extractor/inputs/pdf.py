"""PDF pages -> images with pdfium (``pypdfium2``), at a fixed DPI, one page at a time.

pdfium is the PDF engine of Chrome, fuzzed continuously upstream; ``pypdfium2`` ships
it as a wheel. pdfium is not thread-safe, so every call into it holds one process-wide
lock (discovery counts pages from a few threads).
"""

from __future__ import annotations

import math
import threading

from extractor.errors import BadImageError

PDF_DPI = 200  # a receipt's 7-8 pt print is ~20 px high: plenty for OCR and for VLM tiles
_POINTS_PER_INCH = 72
_PDFIUM = threading.Lock()


def pdf_page_count(data: bytes) -> int:
    """Pages in the document (raises pdfium's error on a file it cannot open)."""
    import pypdfium2 as pdfium

    with _PDFIUM:
        document = pdfium.PdfDocument(data)
        try:
            return len(document)
        finally:
            document.close()


def render_pdf_page(data: bytes, page: int, *, max_pixels: int):
    """Page ``page`` (1-based) as an RGB PIL image at ``PDF_DPI``; a page so large that
    the DPI would exceed ``max_pixels`` is rendered at the DPI that fits instead."""
    import pypdfium2 as pdfium

    with _PDFIUM:
        document = pdfium.PdfDocument(data)
        try:
            pages = len(document)
            if not 1 <= page <= pages:
                raise BadImageError(f"PDF has {pages} pages, page {page} asked for")
            pdf_page = document[page - 1]
            try:
                width, height = pdf_page.get_size()  # points
                if not (width > 0 and height > 0) or not math.isfinite(width * height):
                    raise BadImageError(f"PDF page {page} has no area ({width}x{height} pt)")
                scale = PDF_DPI / _POINTS_PER_INCH
                if width * height * scale * scale > max_pixels:
                    scale = math.sqrt(max_pixels / (width * height)) * 0.999
                bitmap = pdf_page.render(scale=scale)
                try:
                    image = bitmap.to_pil().convert("RGB")  # a copy: the bitmap's buffer is freed below
                finally:
                    bitmap.close()
            finally:
                pdf_page.close()
        finally:
            document.close()
    return image
