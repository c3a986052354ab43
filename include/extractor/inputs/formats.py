"""The allow-list of containers, told from the first bytes (magic numbers), not the name.

Pillow can open some forty formats, several of them rarely used and lightly tested
(QOI, DDS, FLI, ...): every one is attack surface for a file nobody meant to send us.
A receipt arrives as a phone photo (JPEG, HEIC), a screenshot (PNG, WebP), a scan
(TIFF, PDF, BMP, GIF) or an e-mailed PDF; anything else is refused as ``unsupported
format`` before a decoder sees it, and the decoder is then restricted to the one plugin
the magic number names.
"""

from __future__ import annotations

# Pillow's format names (what ``Image.open(..., formats=[...])`` takes); "PDF" is ours.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "PDF", "HEIF")
# Containers that can hold more than one page/frame: each page becomes its own receipt.
MULTI_PAGE_FORMATS = frozenset({"PDF", "TIFF", "GIF", "WEBP", "PNG", "HEIF"})
# How many leading bytes ``sniff_format`` needs (the PDF header may sit anywhere in the
# first 1024 bytes, as readers have always accepted).
SNIFF_BYTES = 1024

_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")

# A few formats people do send by mistake, named in the reason (never the bytes themselves).
_KNOWN_REFUSED = (
    (b"qoif", "QOI"), (b"DDS ", "DDS"), (b"PK\x03\x04", "ZIP/Office document"),
    (b"\x1f\x8b", "gzip"), (b"\x7fELF", "ELF executable"), (b"MZ", "Windows executable"),
    (b"8BPS", "Photoshop"), (b"\x00\x00\x01\x00", "ICO"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"<?xml", "XML/SVG"), (b"<svg", "SVG"),
    (b"{", "JSON/text"), (b"P1", "PBM"), (b"P2", "PGM"), (b"P3", "PPM"), (b"P4", "PBM"),
    (b"P5", "PGM"), (b"P6", "PPM"), (b"\n\x05\x01", "PCX"), (b"FORM", "IFF"),
)


def sniff_format(data: bytes) -> str | None:
    """The allowed container ``data`` starts as ("JPEG", "PDF", ...), or None."""
    head = data[:SNIFF_BYTES]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and len(head) >= 18:
        return "BMP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF"
    if b"%PDF-" in head:
        return "PDF"
    return None


def refused_reason(data: bytes) -> str:
    """``unsupported format`` plus what the bytes look like when it is a known one."""
    head = data[:16]
    if head[4:8] == b"ftyp":
        return "unsupported format (ISO media file that is not HEIC, e.g. AVIF or video)"
    for magic, name in _KNOWN_REFUSED:
        if head.startswith(magic):
            return f"unsupported format (looks like {name})"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in data[:256]):
        return "unsupported format (plain text)"
    return "unsupported format (unrecognised bytes)"
