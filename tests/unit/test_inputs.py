"""The allow-list, pages and reasons of ``extractor.inputs`` on small real files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from extractor.errors import BadImageError
from extractor.images import ReceiptInput, decode_image
from extractor.inputs import MAX_PAGES, document_pages, sniff_format
from extractor.inputs.pdf import PDF_DPI
from extractor.testing.fuzz import text_pdf


def frames(n: int, fmt: str = "TIFF", size=(40, 40)) -> bytes:
    images = [Image.new("RGB", size, (i * 9 % 256, 0, 0)) for i in range(n)]
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=True, append_images=images[1:])
    return buf.getvalue()


def test_the_format_comes_from_the_bytes_not_the_name():
    pdf = text_pdf(["TOTAL 1.00"])
    assert sniff_format(pdf) == "PDF" and sniff_format(b"junk\n" + pdf) == "PDF"  # header in the first KiB
    [only] = ReceiptInput.pages_of(pdf, "scan.jpg")  # a PDF named .jpg is read as a PDF
    width, height = decode_image(only.data).size  # 160 x 200 pt at the fixed DPI
    assert only.page is None
    assert abs(width - 160 * PDF_DPI / 72) <= 1 and abs(height - 200 * PDF_DPI / 72) <= 1
    with pytest.raises(BadImageError, match=r"^unsupported format \(looks like QOI\)$"):
        decode_image(b"qoif" + b"\x00" * 100)


def test_a_document_over_the_page_cap_is_refused_whole_not_truncated():
    data = frames(MAX_PAGES + 1)
    assert document_pages(data) == [None]
    with pytest.raises(BadImageError, match=f"too many pages: {MAX_PAGES + 1} > {MAX_PAGES}"):
        decode_image(data)
    assert document_pages(frames(2)) == [1, 2]
    with pytest.raises(BadImageError, match="handed over as one image"):
        decode_image(frames(2))  # never the first page alone, silently


def test_a_huge_pdf_page_is_rendered_within_the_pixel_limit():
    pdf = text_pdf(["TOTAL 1.00"]).replace(b"/MediaBox [0 0 160 200]", b"/MediaBox [0 0 9000 9000]")
    image = decode_image(pdf, max_pixels=4_000_000)
    assert image.width * image.height <= 4_000_000 and image.width > 1900


def test_reasons_never_quote_the_file():
    tiff = b"II*\x00" + b"root:TOP secret!" * 4
    with pytest.raises(BadImageError) as refused:
        decode_image(tiff)
    assert "root:TOP" not in str(refused.value) and " at 0x" not in str(refused.value)
