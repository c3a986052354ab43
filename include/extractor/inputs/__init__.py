"""Untrusted bytes -> the page images of one document, or a one-line reason why not.

``formats``: which containers we read, told from the bytes (magic numbers), never the
name. ``decode``: one page -> a fully loaded RGB image; every exception a decoder
raises becomes ``BadImageError`` (the file's quarantine reason), never an escape.
``pdf``: PDF pages rendered with pdfium at a fixed DPI. ``extractor.images`` is the
public face (``ReceiptInput``, ``decode_image``) the backends use.
"""

from extractor.inputs.decode import (
    MAX_FILE_BYTES,
    MAX_PAGES,
    MAX_PIXELS,
    MIN_SIDE,
    count_pages,
    decode_page,
    document_pages,
)
from extractor.inputs.formats import ALLOWED_FORMATS, MULTI_PAGE_FORMATS, sniff_format

__all__ = ["ALLOWED_FORMATS", "MAX_FILE_BYTES", "MAX_PAGES", "MAX_PIXELS", "MIN_SIDE",
           "MULTI_PAGE_FORMATS", "count_pages", "decode_page", "document_pages", "sniff_format"]
