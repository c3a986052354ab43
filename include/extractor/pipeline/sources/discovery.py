"""Finding a partition's new receipts: list, hash, skip what this extractor already did, batch.

Layout: ``<root>/dt=YYYY-MM-DD/<name>.<ext>`` where root is a local folder or
``s3://bucket/prefix``. A run reads the partitions of the calendar days (UTC) its data
interval touches. Every regular object in a partition is a receipt candidate, whatever
its name says (a text file renamed .jpg is quarantined later with a reason, not skipped
here); names starting with "." or "_" (editor/OS droppings, upload markers such as
``_SUCCESS``), links out of the source root and entries that are not regular files are
skipped, and counted with their reason (``local_files``). A multi-page document (PDF,
TIFF, GIF, ...) is one receipt per page, id ``<sha256>-p<page>``: pages are counted
here, from the bytes already read for the hash, so every page has its own id in the
batches, the staged results, the warehouse keys and the reconciliation.

The receipt id is the sha256 of the bytes, so the same image uploaded twice is one
receipt, and a receipt already in the warehouse for this extractor version (loaded or
quarantined) is not extracted again: re-running a day is a no-op, and a new extractor
version re-extracts everything. Bytes are streamed through the hash and never kept:
what travels on (XCom) is the URI, the id and the size.

On S3, an object uploaded with a full-object SHA-256 checksum
(``put_object(..., ChecksumAlgorithm="SHA256")``, ``aws s3 cp --checksum-algorithm
SHA256``) is not read at discovery: S3 verified that checksum on upload, so a HEAD gives
the id. Objects without one (or with a multipart "composite" checksum, which is not the
hash of the bytes) are streamed through sha256 as before. Either way ``extract`` checks
the bytes it reads against the id, so a wrong id can only quarantine, never mislabel.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from extractor.pipeline.sources.local_files import MARKER_REASON, SkippedEntry, open_local, scan_local

log = logging.getLogger(__name__)
MAX_SKIPPED_LISTED = 50  # names of skipped entries kept in the run's counts (all are counted)

CHUNK = 1 << 20
HASH_THREADS = 8
AlreadyExtracted = Callable[[str, list[str]], set[str]]  # (extractor_version, ids) -> ids done


@dataclass(frozen=True)
class DiscoveredReceipt:
    """One object found in a partition (what an extract task is handed)."""

    receipt_id: str  # sha256 of the file, or "<sha256>-p<page>" for a page of a document
    uri: str  # readable form (valid UTF-8)
    size: int
    page: int | None = None  # 1-based page of a multi-page document; None for a one-page file
    raw_uri: str | None = None  # base64 of the exact path bytes when the name is not UTF-8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Discovery:
    """The new receipts of a run, in batches, and the counts that explain them."""

    batches: list[list[DiscoveredReceipt]]
    listed: int  # objects in the partitions
    duplicates: int  # objects whose bytes equal an earlier object's
    already_extracted: int  # ids this extractor version already loaded or quarantined
    partitions: list[str]
    ids_from_checksum: int = 0  # S3 objects whose id came from their stored SHA-256 (not read)
    skipped: list[SkippedEntry] = field(default_factory=list)  # entries that are not candidates
    page_receipts: int = 0  # receipts that are pages of multi-page documents (all ids, new or not)

    @property
    def new(self) -> int:
        return sum(len(b) for b in self.batches)

    def counts(self) -> dict[str, Any]:
        """``listed`` objects = ``duplicates`` + the distinct files; ``skipped`` entries
        (links out of the root, markers, vanished, ...) are counted beside them, with
        their reasons and the first names."""
        reasons = Counter(s.reason for s in self.skipped)
        return {"listed": self.listed, "duplicates": self.duplicates,
                "already_extracted": self.already_extracted, "new": self.new,
                "batches": len(self.batches), "ids_from_checksum": self.ids_from_checksum,
                "page_receipts": self.page_receipts, "skipped": len(self.skipped),
                "skipped_reasons": dict(sorted(reasons.items())),
                "skipped_entries": [s.to_dict() for s in self.skipped[:MAX_SKIPPED_LISTED]]}


def partition_days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The UTC calendar days a data interval [start, end) touches (a zero-length interval
    touches the day of ``start``)."""
    start, end = _utc(start), _utc(end)
    last = (end - dt.timedelta(microseconds=1)).date() if end > start else start.date()
    days, day = [], start.date()
    while day <= last:
        days.append(day)
        day += dt.timedelta(days=1)
    return days


def partition_name(day: dt.date) -> str:
    return f"dt={day.isoformat()}"


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _is_marker(name: str) -> bool:
    return name.startswith((".", "_"))


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key.strip("/")


# ----------------------------------------------------------------------------- listing

def list_local(root: str | Path, days: Sequence[dt.date]) -> Iterator[tuple[str, int]]:
    """(absolute path, size) of each regular file in the local partitions, sorted by name
    (readable names; see ``local_files.scan_local`` for the skipped entries and raw names)."""
    files, _ = scan_local(root, days, partition_name)
    for f in files:
        yield f.uri, f.size


def list_s3(client: Any, root: str, days: Sequence[dt.date], skipped: list[SkippedEntry] | None = None
            ) -> Iterator[tuple[str, int, tuple[str, ...]]]:
    """(s3:// URI, size, checksum algorithms S3 lists for it) of each object in the S3
    partitions (paginated, sorted by key); markers and nested keys go to ``skipped``."""
    bucket, prefix = split_s3_uri(root)
    paginator = client.get_paginator("list_objects_v2")
    for day in days:
        part = "/".join(p for p in (prefix, partition_name(day)) if p) + "/"
        for page in paginator.paginate(Bucket=bucket, Prefix=part):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                name = key[len(part):]
                if not name or "/" in name or _is_marker(name):  # folder markers, nested dirs
                    if skipped is not None and name:
                        skipped.append(SkippedEntry(f"s3://{bucket}/{key}", MARKER_REASON if _is_marker(name)
                                                    else "nested key (not in the partition itself)"))
                    continue
                yield f"s3://{bucket}/{key}", int(obj["Size"]), tuple(obj.get("ChecksumAlgorithm") or ())


# ----------------------------------------------------------------------------- bytes

def open_stream(uri: str, s3_client: Any = None, *, raw_uri: str | None = None,
                root: str | None = None, byte_range: str | None = None):
    """A binary file-like object for a local path (``raw_uri``: its exact bytes when the
    name is not UTF-8; ``root``: refuse a path that resolves outside it) or an s3:// URI.
    A missing object raises ``FileNotFoundError`` either way."""
    if uri.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"{uri} needs an S3 client")
        bucket, key = split_s3_uri(uri)
        kwargs = {"Range": byte_range} if byte_range else {}
        try:
            return s3_client.get_object(Bucket=bucket, Key=key, **kwargs)["Body"]
        except Exception as exc:
            if _s3_not_found(exc):
                raise FileNotFoundError(uri) from exc
            raise
    return open_local(uri, raw_uri, root)


def _s3_not_found(exc: Exception) -> bool:
    error = getattr(exc, "response", None) or {}
    return str(error.get("Error", {}).get("Code")) in ("NoSuchKey", "404", "NotFound")


def read_bytes(uri: str, s3_client: Any = None, *, raw_uri: str | None = None,
               root: str | None = None) -> bytes:
    stream = open_stream(uri, s3_client, raw_uri=raw_uri, root=root)
    try:
        return stream.read()
    finally:
        stream.close()


def sha256_of(uri: str, s3_client: Any = None, *, raw_uri: str | None = None) -> str:
    return _hash_and_pages(uri, s3_client, raw_uri=raw_uri, size=None)[0]


def _hash_and_pages(uri: str, s3_client: Any, *, raw_uri: str | None, size: int | None
                    ) -> tuple[str, list[int | None]]:
    """(sha256, pages) of an object read once: the bytes stream through the hash and are
    kept only when the first chunk names a container that may hold pages (PDF, TIFF,
    GIF, ...) and the object is small enough to be a receipt."""
    from extractor.inputs import MAX_FILE_BYTES, MULTI_PAGE_FORMATS, document_pages, sniff_format

    digest, kept, keep = hashlib.sha256(), [], None
    stream = open_stream(uri, s3_client, raw_uri=raw_uri)
    try:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
            if keep is None:
                keep = sniff_format(chunk) in MULTI_PAGE_FORMATS and (size or 0) <= MAX_FILE_BYTES
            if keep:
                kept.append(chunk)
    finally:
        stream.close()
    pages = document_pages(b"".join(kept)) if keep and kept else [None]
    return digest.hexdigest(), pages


def _pages_of_s3_object(uri: str, s3_client: Any, size: int) -> list[int | None]:
    """Pages of an S3 object whose id came from its checksum: a ranged GET of the head,
    and the whole object only when that names a container that may hold pages."""
    from extractor.inputs import MAX_FILE_BYTES, MULTI_PAGE_FORMATS, document_pages, sniff_format
    from extractor.inputs.formats import SNIFF_BYTES

    stream = open_stream(uri, s3_client, byte_range=f"bytes=0-{SNIFF_BYTES - 1}")
    try:
        head = stream.read()
    finally:
        stream.close()
    if sniff_format(head) not in MULTI_PAGE_FORMATS or size > MAX_FILE_BYTES:
        return [None]
    return document_pages(read_bytes(uri, s3_client))


def s3_sha256(s3_client: Any, uri: str) -> str | None:
    """The hex sha256 of an S3 object from its stored full-object checksum (one HEAD, no
    GET), or None when it has none: no SHA-256 checksum, or a multipart composite one
    (a hash of the parts' hashes, "<base64>-<parts>")."""
    bucket, key = split_s3_uri(uri)
    head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    value = head.get("ChecksumSHA256")
    multipart = "-" in head.get("ETag", "")  # "<md5 of part md5s>-<parts>": S3 has no full-object SHA-256 for it
    if not value or multipart or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 32 else None


# ----------------------------------------------------------------------------- discover

@dataclass(frozen=True)
class _Listed:
    uri: str
    size: int
    checksums: tuple[str, ...] = ()
    raw_uri: str | None = None


@dataclass(frozen=True)
class _Identified:
    listed: _Listed
    file_id: str
    pages: list[int | None]
    from_checksum: bool


def _list(source: str, days: Sequence[dt.date], s3_client: Any) -> tuple[list[_Listed], list[SkippedEntry]]:
    if source.startswith("s3://"):
        skipped: list[SkippedEntry] = []
        listed = [_Listed(uri, size, algorithms)
                  for uri, size, algorithms in list_s3(s3_client, source, days, skipped)]
        return listed, skipped
    files, skipped = scan_local(source, days, partition_name)
    return [_Listed(f.uri, f.size, (), f.raw_uri) for f in files], skipped


def _identify(obj: _Listed, s3_client: Any) -> _Identified | SkippedEntry:
    """The file id (sha256) and pages of one object, or why it was skipped (it vanished
    or cannot be read between listing and hashing: a per-object problem, not the run's)."""
    try:
        if "SHA256" in obj.checksums:
            known = s3_sha256(s3_client, obj.uri)
            if known is not None:
                return _Identified(obj, known, _pages_of_s3_object(obj.uri, s3_client, obj.size), True)
        file_id, pages = _hash_and_pages(obj.uri, s3_client, raw_uri=obj.raw_uri, size=obj.size)
        return _Identified(obj, file_id, pages, False)
    except FileNotFoundError:
        return SkippedEntry(obj.uri, "vanished during discovery")
    except OSError as exc:  # local files only: S3 errors other than "not found" fail the task
        if obj.uri.startswith("s3://"):
            raise
        return SkippedEntry(obj.uri, f"unreadable: {type(exc).__name__} (errno {exc.errno})")


def discover(source: str, days: Sequence[dt.date], *, extractor_version: str,
             already_extracted: AlreadyExtracted, batch_size: int, s3_client: Any = None
             ) -> Discovery:
    """List the partitions, hash every object (and count the pages of documents), drop
    duplicates and ids already extracted by ``extractor_version``, and split the rest
    into batches of ``batch_size``: one receipt per page of a multi-page document."""
    from extractor.images import page_receipt_id

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    objects, skipped = _list(source, days, s3_client)
    # Hashing is I/O bound (one GET per object on S3): a few threads, results in listing order.
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        outcomes = list(pool.map(lambda obj: _identify(obj, s3_client), objects))
    skipped += [o for o in outcomes if isinstance(o, SkippedEntry)]
    identified = [o for o in outcomes if isinstance(o, _Identified)]
    from_checksum = sum(o.from_checksum for o in identified)
    if from_checksum:
        log.info("%d of %d ids taken from S3's SHA-256 checksums (no read)", from_checksum, len(objects))
    files: dict[str, _Identified] = {}
    for o in identified:
        if o.file_id in files:
            log.info("%s has the same bytes as %s: one receipt", o.listed.uri, files[o.file_id].listed.uri)
            continue
        files[o.file_id] = o
    found = [DiscoveredReceipt(receipt_id=page_receipt_id(o.file_id, page), uri=o.listed.uri,
                               size=o.listed.size, page=page, raw_uri=o.listed.raw_uri)
             for o in files.values() for page in o.pages]
    ids = [r.receipt_id for r in found]
    done = already_extracted(extractor_version, ids) if ids else set()
    new = [r for r in found if r.receipt_id not in done]
    batches = [new[i:i + batch_size] for i in range(0, len(new), batch_size)]
    discovery = Discovery(batches=batches, listed=len(identified), duplicates=len(identified) - len(files),
                          already_extracted=len(done & set(ids)),
                          partitions=[partition_name(d) for d in days], ids_from_checksum=from_checksum,
                          skipped=skipped, page_receipts=sum(r.page is not None for r in found))
    log.info("discovered in %s %s: %s", source, discovery.partitions, discovery.counts())
    return discovery
