"""Staged extraction results: JSONL files, one ``ExtractionResult`` per line.

The extract tasks write one staged file per batch and pass only its URI through XCom;
validation and loading read it back. A write is atomic (temp file in the same folder,
fsync, rename) so a retried or killed task never leaves a half-written file that a
later task would read as a short batch.

Staged files are kept after the run (re-running ``validate_and_load`` alone, auditing raw
model output) and pruned by ``prune_staging`` once a run's folder has not been written
for the retention period.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from extractor.schema import ExtractionResult

log = logging.getLogger(__name__)


def _local_path(path: str | os.PathLike) -> Path:
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return Path(text)


def write_staged(results: Iterable[ExtractionResult], path: str | os.PathLike) -> dict:
    """Write results as JSONL, atomically; return ``{"uri", "ok", "failed"}``."""
    target = _local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ok = failed = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for result in results:
                fh.write(_staged_line(result))
                fh.write("\n")
                if result.status == "ok":
                    ok += 1
                else:
                    failed += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return {"uri": str(target), "ok": ok, "failed": failed}


def _staged_line(result: ExtractionResult) -> str:
    receipt = result.receipt
    if receipt is not None and receipt.tax_rate is not None and 0 < receipt.tax_rate < 1:
        # normalize.parse_rate reads a bare "0.5" as the fraction 0.5 -> 50 %; written
        # with its percent sign it reads back as the 0.5 % it is.
        data = result.model_dump(mode="json")
        data["receipt"]["tax_rate"] = f"{receipt.tax_rate}%"
        return json.dumps(data, ensure_ascii=False)
    return result.model_dump_json()


def read_staged(path: str | os.PathLike) -> list[ExtractionResult]:
    """Read a staged JSONL file back into results (blank lines are skipped).

    A line that is not a staged result (bad JSON, no receipt_id) raises: a corrupt
    staging file is a run-level failure. A well-formed line whose receipt fields no
    longer pass the schema's normalisers (e.g. a currency code dropped from the list
    since extraction) is a receipt-level problem: it comes back as a failed result
    with the reason, and is quarantined like any other.
    """
    source = _local_path(path)
    results: list[ExtractionResult] = []
    with source.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                results.append(ExtractionResult.model_validate_json(line))
            except ValidationError as exc:
                results.append(_demote(line, exc, f"{source}:{line_no}"))
    return results


def _demote(line: str, exc: ValidationError, where: str) -> ExtractionResult:
    try:
        raw = json.loads(line)
        return ExtractionResult.failed(
            receipt_id=raw["receipt_id"], source=raw["source"],
            extractor_version=raw["extractor_version"],
            reason="staged receipt no longer passes the schema: "
                   + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            raw_text=raw.get("raw_text"), timings=raw.get("timings") or {})
    except (ValueError, KeyError, TypeError) as inner:
        raise ValueError(f"{where}: not a staged ExtractionResult: {exc}") from inner


def read_staged_many(paths: Iterable[str | os.PathLike]) -> list[ExtractionResult]:
    """Concatenate several staged files (one per mapped extract task) in order."""
    results: list[ExtractionResult] = []
    for path in paths:
        results.extend(read_staged(path))
    return results


def _last_write(folder: Path) -> float:
    """Newest mtime of the folder and everything in it (a retried task refreshes it)."""
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except FileNotFoundError:  # removed while we looked
            continue
    return newest


def prune_staging(dag_dir: str | os.PathLike, *, older_than_days: int, keep: Iterable[str] = (),
                  now: float | None = None) -> dict:
    """Delete the run folders under ``dag_dir`` (``<staging>/<dag_id>``) whose newest file is
    older than ``older_than_days``; folders named in ``keep`` (the current run) stay.

    Returns ``{"removed": [...], "kept": n, "errors": {name: reason}}``. A folder that
    cannot be removed is reported, not raised: pruning must not fail the data run, and
    it is retried by the next run."""
    root = _local_path(dag_dir)
    out: dict = {"removed": [], "kept": 0, "errors": {}}
    if older_than_days <= 0 or not root.is_dir():
        return out
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    keep = set(keep)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        if folder.name in keep or _last_write(folder) >= cutoff:
            out["kept"] += 1
            continue
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("could not prune staging folder %s: %s", folder, exc)
            out["errors"][folder.name] = str(exc)
        else:
            out["removed"].append(folder.name)
    return out


def staged_json(result: ExtractionResult) -> str:
    """One result as its staged JSONL line (also the extraction service's wire format)."""
    return _staged_line(result)
