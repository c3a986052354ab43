"""Finding a partition's new receipts: list, hash, skip what this extractor already did, batch.

Layout: ``<root>/dt=YYYY-MM-DD/<name>.<ext>`` where root is a local folder or
``s3://bucket/prefix``. A run reads the partitions of the calendar days (UTC) its data
interval touches. Every regular object in a partition is a receipt candidate, whatever
its name says (a PDF renamed .jpg is quarantined later with a reason, not skipped
here); only names starting with "." or "_" are ignored (editor/OS droppings, upload
markers such as ``_SUCCESS``).

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

log = logging.getLogger(__name__)

CHUNK = 1 << 20
HASH_THREADS = 8
AlreadyExtracted = Callable[[str, list[str]], set[str]]  # (extractor_version, ids) -> ids done


@dataclass(frozen=True)
class DiscoveredReceipt:
    """One object found in a partition (what an extract task is handed)."""

    receipt_id: str
    uri: str
    size: int

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

    @property
    def new(self) -> int:
        return sum(len(b) for b in self.batches)

    def counts(self) -> dict[str, int]:
        return {"listed": self.listed, "duplicates": self.duplicates,
                "already_extracted": self.already_extracted, "new": self.new,
                "batches": len(self.batches), "ids_from_checksum": self.ids_from_checksum}


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
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


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
    """(absolute path, size) of each file in the local partitions, sorted by name."""
    for day in days:
        folder = Path(root) / partition_name(day)
        if not folder.is_dir():
            log.info("partition %s does not exist: nothing arrived that day", folder)
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and not _is_marker(path.name):
                yield str(path.absolute()), path.stat().st_size


def list_s3(client: Any, root: str, days: Sequence[dt.date]) -> Iterator[tuple[str, int, tuple[str, ...]]]:
    """(s3:// URI, size, checksum algorithms S3 lists for it) of each object in the S3
    partitions (paginated, sorted by key)."""
    bucket, prefix = split_s3_uri(root)
    paginator = client.get_paginator("list_objects_v2")
    for day in days:
        part = "/".join(p for p in (prefix, partition_name(day)) if p) + "/"
        for page in paginator.paginate(Bucket=bucket, Prefix=part):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                name = key[len(part):]
                if not name or "/" in name or _is_marker(name):  # folder markers, nested dirs
                    continue
                yield f"s3://{bucket}/{key}", int(obj["Size"]), tuple(obj.get("ChecksumAlgorithm") or ())


# ----------------------------------------------------------------------------- bytes

def open_stream(uri: str, s3_client: Any = None):
    """A binary file-like object for a local path or an s3:// URI."""
    if uri.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"{uri} needs an S3 client")
        bucket, key = split_s3_uri(uri)
        return s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    return open(uri, "rb")


def read_bytes(uri: str, s3_client: Any = None) -> bytes:
    stream = open_stream(uri, s3_client)
    try:
        return stream.read()
    finally:
        stream.close()


def sha256_of(uri: str, s3_client: Any = None) -> str:
    digest = hashlib.sha256()
    stream = open_stream(uri, s3_client)
    try:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    finally:
        stream.close()
    return digest.hexdigest()


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

def discover(source: str, days: Sequence[dt.date], *, extractor_version: str,
             already_extracted: AlreadyExtracted, batch_size: int, s3_client: Any = None
             ) -> Discovery:
    """List the partitions, hash every object, drop duplicates and ids already extracted
    by ``extractor_version``, and split the rest into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    listing: Iterable[tuple[str, int, tuple[str, ...]]]
    if source.startswith("s3://"):
        listing = list_s3(s3_client, source, days)
    else:
        listing = ((uri, size, ()) for uri, size in list_local(source, days))
    objects = list(listing)

    def receipt_id(obj: tuple[str, int, tuple[str, ...]]) -> tuple[str, bool]:
        """(id, whether it came from S3's stored checksum)."""
        uri, _, algorithms = obj
        if "SHA256" in algorithms:
            known = s3_sha256(s3_client, uri)
            if known is not None:
                return known, True
        return sha256_of(uri, s3_client), False

    # Hashing is I/O bound (one GET per object on S3): a few threads, results in listing order.
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        hashed = list(pool.map(receipt_id, objects))
    ids = [rid for rid, _ in hashed]
    from_checksum = sum(used for _, used in hashed)
    if from_checksum:
        log.info("%d of %d ids taken from S3's SHA-256 checksums (no read)", from_checksum, len(objects))
    found: dict[str, DiscoveredReceipt] = {}
    listed = 0
    for (uri, size, _), rid in zip(objects, ids):
        listed += 1
        if rid in found:
            log.info("%s has the same bytes as %s: one receipt", uri, found[rid].uri)
            continue
        found[rid] = DiscoveredReceipt(receipt_id=rid, uri=uri, size=size)
    done = already_extracted(extractor_version, list(found)) if found else set()
    new = [r for r in found.values() if r.receipt_id not in done]
    batches = [new[i:i + batch_size] for i in range(0, len(new), batch_size)]
    discovery = Discovery(batches=batches, listed=listed, duplicates=listed - len(found),
                          already_extracted=len(done & set(found)),
                          partitions=[partition_name(d) for d in days], ids_from_checksum=from_checksum)
    log.info("discovered in %s %s: %s", source, discovery.partitions, discovery.counts())
    return discovery
