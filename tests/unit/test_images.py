import io
import struct
import zlib

import pytest
from PIL import Image

from extractor.errors import BadImageError
from extractor.images import ReceiptInput, decode_image, receipt_id_of


def jpeg(w=200, h=300, color=255) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), color).save(buf, "JPEG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring a huge canvas: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_decodes_a_good_image_to_rgb():
    image = decode_image(jpeg())
    assert image.mode == "RGB" and image.size == (200, 300)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"TOTAL 12.00\nthanks", "unsupported format"),
    (jpeg()[:400], "truncated"),
    (png_header_only(100_000, 100_000), "too large"),
    (jpeg(1, 1), "too small"),
])
def test_bad_inputs_raise_with_reason(data, reason):
    with pytest.raises(BadImageError, match=reason):
        decode_image(data)


def test_file_size_cap():
    with pytest.raises(BadImageError, match="file too large"):
        decode_image(b"x" * 11, max_bytes=10)


def test_receipt_id_is_sha256_of_bytes():
    data = jpeg()
    item = ReceiptInput.from_bytes(data, "s3://b/k.jpg")
    assert item.receipt_id == receipt_id_of(data) and len(item.receipt_id) == 64
    assert ReceiptInput.from_bytes(jpeg(color=0), "x").receipt_id != item.receipt_id


def test_page_ids_and_sources_round_trip():
    from extractor.images import file_id_of, page_receipt_id, page_source, split_page_source

    sha = receipt_id_of(b"a document")
    assert page_receipt_id(sha, None) == sha and file_id_of(page_receipt_id(sha, 3)) == sha
    assert split_page_source(page_source("s3://b/k#1.pdf", 2)) == ("s3://b/k#1.pdf", 2)
    assert split_page_source("/in/dt=2026-03-01/a.jpg") == ("/in/dt=2026-03-01/a.jpg", None)
