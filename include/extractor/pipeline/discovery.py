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
"""

from __future__ import annotations

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

    @property
    def new(self) -> int:
        return sum(len(b) for b in self.batches)

    def counts(self) -> dict[str, int]:
        return {"listed": self.listed, "duplicates": self.duplicates,
                "already_extracted": self.already_extracted, "new": self.new,
                "batches": len(self.batches)}


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


def list_s3(client: Any, root: str, days: Sequence[dt.date]) -> Iterator[tuple[str, int]]:
    """(s3:// URI, size) of each object in the S3 partitions (paginated, sorted by key)."""
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
                yield f"s3://{bucket}/{key}", int(obj["Size"])


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


# ----------------------------------------------------------------------------- discover

def discover(source: str, days: Sequence[dt.date], *, extractor_version: str,
             already_extracted: AlreadyExtracted, batch_size: int, s3_client: Any = None
             ) -> Discovery:
    """List the partitions, hash every object, drop duplicates and ids already extracted
    by ``extractor_version``, and split the rest into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    listing: Iterable[tuple[str, int]]
    if source.startswith("s3://"):
        listing = list_s3(s3_client, source, days)
    else:
        listing = list_local(source, days)
    objects = list(listing)
    # Hashing is I/O bound (one GET per object on S3): a few threads, results in listing order.
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        ids = list(pool.map(lambda obj: sha256_of(obj[0], s3_client), objects))
    found: dict[str, DiscoveredReceipt] = {}
    listed = 0
    for (uri, size), receipt_id in zip(objects, ids):
        listed += 1
        if receipt_id in found:
            log.info("%s has the same bytes as %s: one receipt", uri, found[receipt_id].uri)
            continue
        found[receipt_id] = DiscoveredReceipt(receipt_id=receipt_id, uri=uri, size=size)
    done = already_extracted(extractor_version, list(found)) if found else set()
    new = [r for r in found.values() if r.receipt_id not in done]
    batches = [new[i:i + batch_size] for i in range(0, len(new), batch_size)]
    discovery = Discovery(batches=batches, listed=listed, duplicates=listed - len(found),
                          already_extracted=len(done & set(found)),
                          partitions=[partition_name(d) for d in days])
    log.info("discovered in %s %s: %s", source, discovery.partitions, discovery.counts())
    return discovery
