"""Turning untrusted bytes into receipt images, or a clear reason why not.

Receipts come from phones, scanners and e-mail gateways: empty uploads, truncated
transfers, PDFs, multi-page scans, crafted files and deliberately huge images all
arrive. The work is done in ``extractor.inputs`` (an allow-list of containers told from
the bytes, PDF rendering, a guard that turns every decoder exception into the file's
reason); this module is what the backends use: ``ReceiptInput`` and ``decode_image``.

A receipt's id is the sha256 of its file's bytes. A multi-page document (PDF, TIFF,
GIF, ...) is one receipt per page, with id ``<sha256>-p<page>`` (1-based), so every
page has one id from discovery through the warehouse keys (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from extractor.inputs import MAX_FILE_BYTES, MAX_PAGES, MAX_PIXELS, MIN_SIDE, decode_page, document_pages

__all__ = ["MAX_FILE_BYTES", "MAX_PAGES", "MAX_PIXELS", "MIN_SIDE", "ReceiptInput", "decode_image",
           "file_id_of", "page_receipt_id", "page_source", "receipt_id_of", "split_page_source"]

_PAGE_MARK = "-p"


@dataclass(frozen=True)
class ReceiptInput:
    """One receipt to extract: its id, where it came from, the file's bytes and, for a
    page of a multi-page document, the page number (1-based; None for a one-page file)."""

    receipt_id: str
    source: str
    data: bytes
    page: int | None = None

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> ReceiptInput:
        return cls(receipt_id=receipt_id_of(data), source=source, data=data)

    @classmethod
    def pages_of(cls, data: bytes, source: str) -> list[ReceiptInput]:
        """One input per page of the document in ``data`` (one for a single-page file)."""
        file_id = receipt_id_of(data)
        return [cls(receipt_id=page_receipt_id(file_id, page), source=page_source(source, page),
                    data=data, page=page) for page in document_pages(data)]


def receipt_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def page_receipt_id(file_id: str, page: int | None) -> str:
    """The receipt id of page ``page`` of the file whose sha256 is ``file_id``."""
    return file_id if page is None else f"{file_id}{_PAGE_MARK}{page}"


def file_id_of(receipt_id: str) -> str:
    """The sha256 of the file a receipt (or one of its pages) was read from."""
    return receipt_id.split(_PAGE_MARK, 1)[0]


def page_source(source: str, page: int | None) -> str:
    """``<uri>#page=<n>`` for a page (the PDF fragment convention), the uri otherwise."""
    return source if page is None else f"{source}#page={page}"


def split_page_source(source: str) -> tuple[str, int | None]:
    """(uri, page) of a ``source`` column value: the inverse of ``page_source``, for readers
    of the warehouse (e.g. something that shows a receipt's image)."""
    uri, mark, page = source.rpartition("#page=")
    return (uri, int(page)) if mark and page.isdigit() else (source, None)


def decode_image(data: bytes, *, page: int | None = None, max_pixels: int = MAX_PIXELS,
                 max_bytes: int = MAX_FILE_BYTES, mode: str = "RGB"):
    """Decode and fully load page ``page`` (or the only image) of ``data``, or raise
    ``BadImageError`` with the reason (and nothing else)."""
    return decode_page(data, page, max_pixels=max_pixels, max_bytes=max_bytes, mode=mode)
