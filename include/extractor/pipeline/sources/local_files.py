"""Listing and reading a local source folder safely: odd names, links, files that vanish.

- A file name that is not valid UTF-8 (``caf\\xe9.jpg`` written by an old scanner) is
  carried as a readable name (``os.fsencode`` then ``backslashreplace``: valid UTF-8,
  fine in XCom, JSON and the warehouse) plus, only for such names, ``raw_uri``: the
  path's exact bytes in base64, which is what the file is opened by. Reversible, and
  every other name travels unchanged.
- A symbolic link is followed only when its target stays inside the source root (the
  partition folder itself included); one pointing out, a broken link or anything that
  is not a regular file (a folder, a FIFO that would block a read) is skipped with a
  reason that names the entry, never its contents, and counted in the run's counts.
- Reading checks containment again, so a file swapped for an outside link after
  discovery is refused, and a file deleted after discovery raises ``FileNotFoundError``
  (the extract task quarantines it as ``vanished``).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MARKER_REASON = "marker file (name starts with '.' or '_')"
OUTSIDE_ROOT = "symbolic link pointing outside the source root"


class OutsideRootError(PermissionError):
    """A path that resolves outside the source root."""


@dataclass(frozen=True)
class LocalFile:
    """One regular file of a partition."""

    uri: str  # absolute path, readable form (valid UTF-8)
    size: int
    raw_uri: str | None = None  # base64 of the exact path bytes when the name is not UTF-8


@dataclass(frozen=True)
class SkippedEntry:
    """A partition entry that is not a receipt candidate, and why."""

    name: str  # readable form
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


def readable_path(path: str) -> tuple[str, str | None]:
    """(a valid-UTF-8 form of ``path``, base64 of its bytes when the two differ)."""
    try:
        path.encode("utf-8")
        return path, None
    except UnicodeEncodeError:  # undecodable bytes held as surrogates (surrogateescape)
        raw = os.fsencode(path)
        return raw.decode("utf-8", "backslashreplace"), base64.b64encode(raw).decode("ascii")


def path_of(uri: str, raw_uri: str | None = None) -> str:
    """The exact path a (readable uri, raw_uri) pair names."""
    return os.fsdecode(base64.b64decode(raw_uri)) if raw_uri else uri


def inside(root_real: str, path: str | os.PathLike) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def scan_local(root: str | Path, days: Sequence[dt.date], partition_name
               ) -> tuple[list[LocalFile], list[SkippedEntry]]:
    """The regular files of the local partitions (sorted by name) and the entries skipped."""
    root_real = os.path.realpath(root)
    files: list[LocalFile] = []
    skipped: list[SkippedEntry] = []
    for day in days:
        folder = Path(root) / partition_name(day)
        if not folder.is_dir():
            log.info("partition %s does not exist: nothing arrived that day", folder)
            continue
        if not inside(root_real, folder):
            skipped.append(SkippedEntry(readable_path(str(folder))[0], OUTSIDE_ROOT))
            continue
        for path in sorted(folder.iterdir()):
            entry = _entry(path, root_real)
            if isinstance(entry, SkippedEntry):
                log.log(logging.INFO if entry.reason == MARKER_REASON else logging.WARNING,
                        "skipped %s: %s", entry.name, entry.reason)
                skipped.append(entry)
            else:
                files.append(entry)
    return files, skipped


def _entry(path: Path, root_real: str) -> LocalFile | SkippedEntry:
    name, raw = readable_path(str(path.absolute()))
    if path.name.startswith((".", "_")):  # editor/OS droppings, upload markers (_SUCCESS)
        return SkippedEntry(name, MARKER_REASON)
    try:
        if path.is_symlink():
            if not os.path.exists(path):
                return SkippedEntry(name, "broken symbolic link")
            if not inside(root_real, path):
                return SkippedEntry(name, OUTSIDE_ROOT)
        info = os.stat(path)
    except FileNotFoundError:
        return SkippedEntry(name, "vanished during discovery")
    except OSError as exc:
        return SkippedEntry(name, f"unreadable: {type(exc).__name__} (errno {exc.errno})")
    if not stat.S_ISREG(info.st_mode):
        return SkippedEntry(name, "not a regular file")
    return LocalFile(uri=name, size=info.st_size, raw_uri=raw)


def open_local(uri: str, raw_uri: str | None = None, root: str | None = None):
    """Open a listed file for reading; ``OutsideRootError`` when it now resolves outside
    ``root`` (swapped for a link after discovery), ``FileNotFoundError`` when it is gone."""
    path = path_of(uri, raw_uri)
    if root is not None and not inside(os.path.realpath(root), path):
        if not os.path.lexists(path):
            raise FileNotFoundError(path)
        raise OutsideRootError(f"{uri}: {OUTSIDE_ROOT}")
    return open(path, "rb")
