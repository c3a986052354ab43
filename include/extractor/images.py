"""Turning untrusted bytes into a receipt image, or a clear reason why not.

Receipts come from phones, scanners and e-mail gateways: empty uploads, truncated
transfers, PDFs renamed .jpg and deliberately huge images all arrive. Each is refused
here with a reason that ends up in the quarantine table.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from extractor.errors import BadImageError

MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000  # ~6300x6300; a phone photo is 12-50 MP, a scan far less
MIN_SIDE = 32  # below this no text is legible


@dataclass(frozen=True)
class ReceiptInput:
    """One receipt to extract: its id (sha256 of the bytes), where it came from, the bytes."""

    receipt_id: str
    source: str
    data: bytes

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> "ReceiptInput":
        return cls(receipt_id=receipt_id_of(data), source=source, data=data)


def receipt_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES,
                 mode: str = "RGB"):
    """Decode and fully load an image, or raise ``BadImageError`` with the reason.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing; ``load()`` forces the whole file to be read so a
    truncated file fails here rather than deep inside a model.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImageError("empty file (0 bytes)")
    if len(data) > max_bytes:
        raise BadImageError(f"file too large: {len(data)} bytes > {max_bytes}")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            fmt = probe.format
    except UnidentifiedImageError:
        raise BadImageError(f"not an image (starts with {data[:8]!r})") from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"image too large, decompression bomb refused: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(f"unreadable image header: {exc}") from None
    if width * height > max_pixels:
        raise BadImageError(f"image too large: {width}x{height} px > {max_pixels} px (decompression bomb?)")
    if min(width, height) < MIN_SIDE:
        raise BadImageError(f"image too small to hold a receipt: {width}x{height} px")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"corrupt or truncated {fmt or 'image'}: {exc}") from None
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)  # phone photos carry their rotation in EXIF
    return image.convert(mode) if image.mode != mode else image
