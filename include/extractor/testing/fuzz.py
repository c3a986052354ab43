"""Poison files for the decoder: seed files of every container, and seeded mutations.

Used by the fuzz test (``tests/unit/test_fuzz_decode.py``, a few thousand mutations) and
the fuzz benchmark (``bench/fuzz_decode.py``, >= 100,000). A seed is a small valid file
of one container (every allowed one, multi-page TIFF/GIF/PDF included, and some refused
ones Pillow would otherwise open: QOI, DDS, ICO, ...). A mutation is one of: byte
overwrites, bit flips, truncation, another format's magic number over the head, a
splice of two files, inserted bytes, a duplicated slice, or an "interesting" 32-bit
value (0, -1, 2^31-1, ...) written over a header field. ``decode_outcome`` decodes every
page the way the pipeline does and says whether the result was images, a
``BadImageError``, or an escape (any other exception: a bug).
"""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

ALLOWED_SEEDS = ("JPEG", "PNG", "APNG", "WEBP", "TIFF", "BMP", "GIF", "PDF-text", "PDF-image", "HEIF")
REFUSED_SEEDS = ("QOI", "DDS", "ICO", "PPM", "PCX", "TGA", "SGI", "JPEG2000", "text", "zip")
MAGICS = (b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"II*\x00",
          b"MM\x00*", b"BM", b"GIF89a", b"%PDF-1.7\n", b"\x00\x00\x00\x1cftypheic", b"qoif",
          b"DDS |\x00\x00\x00", b"\x00\x00\x01\x00", b"P6\n", b"\n\x05\x01\x08", b"PK\x03\x04",
          b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"8BPS", b"FORM", b"\x01\xda")
_FIXED_TIME = time.gmtime(1_767_225_600)  # Pillow stamps PDFs with "now": seeds must not change
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000)


def _image(seed: int, size: tuple[int, int] = (48, 64)):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    rng = random.Random(seed)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.rectangle((x, y, x + 8, y + 3), fill=(rng.randrange(256), 0, rng.randrange(256)))
    return image


def _save(fmt: str, frames: int = 1, **kwargs) -> bytes:
    images = [_image(i) for i in range(frames)]  # fresh images per save: Pillow's PDF writer alters them
    buf = io.BytesIO()
    if frames > 1:
        images[0].save(buf, fmt, save_all=True, append_images=images[1:], **kwargs)
    else:
        images[0].save(buf, fmt, **kwargs)
    return buf.getvalue()


def text_pdf(pages: list[str], *, compress_first: bool = True) -> bytes:
    """A small hand-written PDF with one line of Helvetica text per page."""
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 10 170 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 160 200] /Resources "
                       f"<< /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode())
        if compress_first and i == 0:
            body = zlib.compress(content)
            objects.append(f"<< /Length {len(body)} /Filter /FlateDecode >>\nstream\n".encode()
                           + body + b"\nendstream")
        else:
            objects.append(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write(b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets))
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def _heif() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return _save("HEIF", quality=50)


def _zip() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(zipfile.ZipInfo("receipt.txt", date_time=(2026, 1, 1, 0, 0, 0)), "TOTAL 12.30\n")
    return buf.getvalue()


_SEED_MAKERS: dict[str, Callable[[], bytes]] = {
    "JPEG": lambda: _save("JPEG", quality=80), "PNG": lambda: _save("PNG"),
    "APNG": lambda: _save("PNG", frames=2), "WEBP": lambda: _save("WEBP", quality=60),
    "TIFF": lambda: _save("TIFF", frames=3), "BMP": lambda: _save("BMP"),
    "GIF": lambda: _save("GIF", frames=3), "PDF-text": lambda: text_pdf(["TOTAL 1.00", "p2", "p3"]),
    "PDF-image": lambda: _save("PDF", frames=2, resolution=72, creationDate=_FIXED_TIME,
                                modDate=_FIXED_TIME), "HEIF": _heif,
    "QOI": lambda: _save("QOI"), "DDS": lambda: _save("DDS"), "ICO": lambda: _save("ICO"),
    "PPM": lambda: _save("PPM"), "PCX": lambda: _save("PCX"), "TGA": lambda: _save("TGA"),
    "SGI": lambda: _save("SGI"), "JPEG2000": lambda: _save("JPEG2000"),
    "text": lambda: b"TOTAL 12.30\nroot:TOP secret line\n" * 4, "zip": _zip,
}


def seed_files() -> dict[str, bytes]:
    """One small file per container (deterministic bytes)."""
    return {name: make() for name, make in _SEED_MAKERS.items()}


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> tuple[str, bytes]:
    """(mutation kind, mutated bytes): one seeded mutation of ``data``."""
    kind = rng.choice(("overwrite", "bitflip", "truncate", "magic", "splice", "insert", "duplicate",
                       "interesting", "overwrite"))
    buf = bytearray(data)
    n = len(buf)
    if kind == "overwrite":
        for _ in range(rng.randint(1, 16)):
            buf[rng.randrange(n)] = rng.randrange(256)
    elif kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        buf = buf[:rng.randrange(n)]
    elif kind == "magic":
        magic = rng.choice(MAGICS)
        buf[:len(magic)] = magic
    elif kind == "splice":
        other = rng.choice(others)
        buf = buf[:rng.randrange(n)] + bytearray(other[rng.randrange(len(other)):])
    elif kind == "insert":
        at = rng.randrange(n)
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "duplicate":
        start = rng.randrange(n)
        end = min(n, start + rng.randint(1, 256))
        buf[end:end] = buf[start:end] * rng.randint(1, 8)
    else:  # interesting: a header field set to an edge value
        at = rng.randrange(min(n, 512))
        buf[at:at + 4] = struct.pack(rng.choice(("<I", ">I")), rng.choice(INTERESTING))
    return kind, bytes(buf)


@dataclass(frozen=True)
class Outcome:
    """What decoding one file did: "decoded" (every page), "refused" (BadImageError),
    or "escaped" (anything else, with its type and message)."""

    status: str
    pages: int = 0
    reason: str = ""


def decode_outcome(data: bytes) -> Outcome:
    """Decode every page of ``data`` as the pipeline does (discovery's page list, then
    each page); never raises for an exception a decoder may throw."""
    from extractor.errors import BadImageError
    from extractor.images import decode_image
    from extractor.inputs import document_pages

    try:
        pages = document_pages(data)
    except Exception as exc:  # noqa: BLE001 - an escape is what this harness looks for
        return Outcome("escaped", reason=f"document_pages: {type(exc).__name__}: {exc}"[:300])
    refused = ""
    for page in pages:  # every page, as extract does: one failing page does not hide the next
        try:
            decode_image(data, page=page)
        except BadImageError as exc:
            refused = refused or str(exc)
        except Exception as exc:  # noqa: BLE001 - an escape is what this harness looks for
            return Outcome("escaped", pages=len(pages), reason=f"{type(exc).__name__}: {exc}"[:300])
    return Outcome("refused", len(pages), refused) if refused else Outcome("decoded", pages=len(pages))
