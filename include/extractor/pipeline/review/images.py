"""A receipt's image, read back from where it came from and checked against its id."""

from __future__ import annotations

import io
from typing import Any

from extractor.errors import BadImageError, ExtractorError
from extractor.images import decode_image, receipt_id_of

# PIL format name -> (file extension, media type) of the formats a receipt arrives in
FORMATS = {"JPEG": (".jpg", "image/jpeg"), "PNG": (".png", "image/png"),
           "WEBP": (".webp", "image/webp"), "TIFF": (".tif", "image/tiff"),
           "BMP": (".bmp", "image/bmp"), "GIF": (".gif", "image/gif")}


class ImageUnavailable(ExtractorError):
    """The image of a receipt cannot be shown (gone, changed, or not an image): the reason."""


def sources_of(warehouse: Any, receipt_id: str) -> list[str]:
    """Every place the warehouse saw this receipt's bytes (one id, possibly several copies)."""
    rows = warehouse.fetch(
        'SELECT "source" FROM "receipts" WHERE "receipt_id" = ? UNION '
        'SELECT "source" FROM "quarantine" WHERE "receipt_id" = ? UNION '
        'SELECT "source" FROM "corrections" WHERE "receipt_id" = ?', (receipt_id,) * 3)
    return sorted(r[0] for r in rows)


def read_image(source: str, receipt_id: str, s3_client: Any = None) -> bytes:
    """The bytes at ``source``, refused unless they still hash to ``receipt_id``."""
    from extractor.pipeline.sources.discovery import read_bytes

    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    if source.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        errors += (BotoCoreError, ClientError)  # the object is gone, or access is denied
    try:
        data = read_bytes(source, s3_client)
    except errors as exc:
        raise ImageUnavailable(f"cannot read {source}: {exc}") from exc
    if receipt_id_of(data) != receipt_id:
        raise ImageUnavailable(f"{source} changed since it was extracted (its bytes no longer "
                               f"match the receipt id)")
    return data


def image_format(data: bytes) -> tuple[str, str]:
    """(file extension, media type) from the image header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageUnavailable(f"not an image: {exc}") from None
    if fmt not in FORMATS:
        raise ImageUnavailable(f"image format {fmt or 'unknown'} cannot be shown")
    return FORMATS[fmt]


def readable_image(source: str, receipt_id: str, s3_client: Any = None) -> str | None:
    """None when the image can be read and decoded, else the reason it cannot."""
    try:
        decode_image(read_image(source, receipt_id, s3_client))
    except (ImageUnavailable, BadImageError) as exc:
        return str(exc)
    return None
