"""One page of an untrusted file -> a fully loaded image, or ``BadImageError`` with the reason.

Limits are checked before pixels are decoded (a decompression bomb costs nothing), the
decoder is restricted to the container the magic number names, and whatever a decoder
raises (Pillow's plugins raise ``IndexError``, ``ZeroDivisionError``, ``struct.error``,
``NotImplementedError`` on crafted files) is turned into that file's reason: its
exception type and first line, with any bytes the message quotes removed, so a reason
never echoes a file's contents.
"""

from __future__ import annotations

import io
import re

from extractor.errors import BadImageError
from extractor.inputs.formats import MULTI_PAGE_FORMATS, refused_reason, sniff_format

MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000  # ~6300x6300; a phone photo is 12-50 MP, a scan far less
MIN_SIDE = 32  # below this no text is legible
MAX_PAGES = 20  # a longer document is not a receipt: quarantined whole, with its page count
_REASON_CHARS = 200
_BYTES_LITERAL = re.compile(r"""b(['"])(?:\\.|(?!\1).)*\1""")
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # "<_io.BytesIO object at 0x7f...>"


def decode_page(data: bytes, page: int | None = None, *, max_pixels: int = MAX_PIXELS,
                max_bytes: int = MAX_FILE_BYTES, mode: str = "RGB"):
    """Page ``page`` (1-based; None for a single-page file) of ``data`` as an image in
    ``mode``. Raises ``BadImageError`` and nothing else."""
    try:
        return _decode(data, page, max_pixels=max_pixels, max_bytes=max_bytes, mode=mode)
    except BadImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's reason, by design
        raise BadImageError(describe_failure(exc)) from None


def describe_failure(exc: BaseException) -> str:
    """``"corrupt or unreadable file: <Type>: <first line>"``."""
    return f"corrupt or unreadable file: {exception_line(exc)}"


def exception_line(exc: BaseException) -> str:
    """``"<Type>: <first line of the message>"``, with any bytes the message quotes
    replaced by ``<bytes>``, object reprs (memory addresses) by ``<file>`` and unprintable
    characters by ``?``: never file contents, and the same text for the same file."""
    lines = str(exc).strip().splitlines()
    first = _OBJECT_REPR.sub("<file>", _BYTES_LITERAL.sub("<bytes>", lines[0] if lines else ""))
    first = "".join(c if c.isprintable() else "?" for c in first)[:_REASON_CHARS]
    return type(exc).__name__ + (f": {first}" if first else "")


def count_pages(data: bytes) -> int:
    """Pages (frames) in ``data``; 1 for single-image formats and for any file whose page
    count cannot be read (decoding it then gives the reason). Never raises."""
    fmt = sniff_format(data)
    if fmt not in MULTI_PAGE_FORMATS or len(data) > MAX_FILE_BYTES:
        return 1
    try:
        if fmt == "PDF":
            from extractor.inputs.pdf import pdf_page_count

            return max(1, pdf_page_count(data))
        with _open_pillow(data, fmt) as image:
            return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - unreadable here means one receipt, quarantined at decode
        return 1


def document_pages(data: bytes) -> list[int | None]:
    """The page numbers to extract from ``data`` as separate receipts: ``[None]`` for a
    single-page file (and for one over ``MAX_PAGES``, which decoding then refuses whole),
    ``[1, 2, ...]`` for a multi-page document."""
    pages = count_pages(data)
    return list(range(1, pages + 1)) if 1 < pages <= MAX_PAGES else [None]


def _decode(data: bytes, page: int | None, *, max_pixels: int, max_bytes: int, mode: str):
    if not data:
        raise BadImageError("empty file (0 bytes)")
    if len(data) > max_bytes:
        raise BadImageError(f"file too large: {len(data)} bytes > {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise BadImageError(refused_reason(data))
    pages = count_pages(data)
    if pages > MAX_PAGES:
        raise BadImageError(f"too many pages: {pages} > {MAX_PAGES} (not a receipt?)")
    if page is None and pages > 1:
        raise BadImageError(f"multi-page {fmt} ({pages} pages) handed over as one image")
    if fmt == "PDF":
        from extractor.inputs.pdf import render_pdf_page

        image = render_pdf_page(data, page or 1, max_pixels=max_pixels)
        _check_size(image.size, max_pixels)
        return image.convert(mode) if image.mode != mode else image
    return _decode_raster(data, fmt, page, max_pixels=max_pixels, mode=mode)


def _decode_raster(data: bytes, fmt: str, page: int | None, *, max_pixels: int, mode: str):
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = _open_pillow(data, fmt)
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"image too large, decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise BadImageError(f"unreadable {fmt} header: not a valid {fmt} file after its magic "
                            f"number") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(f"unreadable {fmt} header: {exception_line(exc)}") from None
    with image:
        if page is not None:
            image.seek(page - 1)
        _check_size(image.size, max_pixels)
        try:
            image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise BadImageError(f"corrupt or truncated {fmt}: {exception_line(exc)}") from None
        # a new image (a copy when there is no rotation), so closing the file is safe
        frame = ImageOps.exif_transpose(image)  # phone photos carry their rotation in EXIF
    return frame.convert(mode) if frame.mode != mode else frame


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise BadImageError(f"image too large: {width}x{height} px > {max_pixels} px (decompression bomb?)")
    if min(width, height) < MIN_SIDE:
        raise BadImageError(f"image too small to hold a receipt: {width}x{height} px")


def _open_pillow(data: bytes, fmt: str):
    """``Image.open`` restricted to the one plugin ``fmt`` names (header only, lazy)."""
    from PIL import Image

    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    return Image.open(io.BytesIO(data), formats=[fmt])
