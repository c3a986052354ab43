"""One extract task's batch in staging: staged per model batch, and known by its content.

**Per model batch, so a kill loses one model batch at most.** An extract task reads
``batch_size * batches_per_task`` receipts; each model batch's results are staged (an
atomic JSONL file, see ``staging``) as soon as the model returns them, under
``<run folder>/chunks/<key>.jsonl`` where the key hashes the extractor version and the
model batch's receipt ids. A retry of a task killed half-way (SIGKILL, OOM, a lost
node) finds those files and extracts only the model batches that have none; a retry
that finds every chunk staged does not even load the model.

**Known by content, not by position.** Airflow hands a mapped task's results to its
downstream task by map index, and a cleared run whose new mapping is smaller keeps the
removed task instances' results (their XComs are never cleared: the task instances do
not run again). Each staged result therefore carries the map index it was made for and
a key of its batch's receipt ids; ``select_current`` keeps the results whose (index,
key) match the run's current discovery and drops the rest, so a previous try's
leftovers cannot reach the load.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extractor.pipeline.sources.staging import read_staged, write_staged
from extractor.schema import ExtractionResult

log = logging.getLogger(__name__)

Item = dict[str, Any]  # a discovered receipt as it travels in XCom (receipt_id, uri, size)
ExtractChunk = Callable[[Sequence[Item]], list[ExtractionResult]]


class StagingMismatch(RuntimeError):
    """Staged results that do not cover the run's current batches."""


def batch_key(items: Sequence[Item]) -> str:
    """A short hash of a batch's receipt ids, in order: the batch's identity."""
    return hashlib.sha256("\n".join(i["receipt_id"] for i in items).encode()).hexdigest()[:16]


def chunk_path(run_dir: Path, extractor_version: str, items: Sequence[Item]) -> Path:
    """Where one model batch's results are staged (same receipts + version = same file)."""
    text = extractor_version + "\n" + "\n".join(i["receipt_id"] for i in items)
    return run_dir / "chunks" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.jsonl"


@dataclass
class StagedBatch:
    results: list[ExtractionResult]
    extracted: int  # receipts run through the backend by this try
    resumed: int  # receipts whose results an earlier, interrupted try had staged


def extract_resumable(items: Sequence[Item], *, model_batch_size: int, run_dir: Path,
                      extractor_version: str, extract_chunk: ExtractChunk) -> StagedBatch:
    """Extract ``items`` one model batch at a time, staging each as it finishes and
    reusing what an earlier try of the same batch staged."""
    results: list[ExtractionResult] = []
    extracted = resumed = 0
    for start in range(0, len(items), model_batch_size):
        chunk = items[start:start + model_batch_size]
        ids = [i["receipt_id"] for i in chunk]
        path = chunk_path(run_dir, extractor_version, chunk)
        staged = _staged_chunk(path, ids)
        if staged is not None:
            results.extend(staged)
            resumed += len(chunk)
            continue
        fresh = extract_chunk(chunk)
        if [r.receipt_id for r in fresh] != ids:
            raise RuntimeError(f"the backend returned {len(fresh)} results for a model batch of "
                               f"{len(ids)}: a receipt went missing")
        write_staged(fresh, path)
        results.extend(fresh)
        extracted += len(chunk)
    if resumed:
        log.info("resumed %d of %d receipts from model batches staged by an earlier try",
                 resumed, len(items))
    return StagedBatch(results=results, extracted=extracted, resumed=resumed)


def _staged_chunk(path: Path, ids: list[str]) -> list[ExtractionResult] | None:
    if not path.is_file():
        return None
    try:
        staged = read_staged(path)
    except (OSError, ValueError) as exc:  # unreadable: extract again, do not fail the batch
        log.warning("staged model batch %s is unreadable (%s): extracting it again", path, exc)
        return None
    if [r.receipt_id for r in staged] != ids:
        log.warning("staged model batch %s holds other receipts: extracting it again", path)
        return None
    return staged


def select_current(staged: Sequence[dict[str, Any]], batches: Sequence[Sequence[Item]]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the staged results of the current batches, in batch order; the stale ones).

    A result is current when its ``map_index`` names a current batch and its
    ``batch_key`` is that batch's key. Raises ``StagingMismatch`` when a current batch has
    no result (its extract task did not run or did not finish)."""
    expected = {index: batch_key(batch) for index, batch in enumerate(batches)}
    current: dict[int, dict[str, Any]] = {}
    stale: list[dict[str, Any]] = []
    for entry in staged:
        index = entry.get("map_index")
        if index in expected and entry.get("batch_key") == expected[index] and index not in current:
            current[index] = entry
        else:
            stale.append(entry)
    missing = sorted(set(expected) - set(current))
    if missing:
        raise StagingMismatch(f"no staged result for batch(es) {missing[:10]} of {len(batches)} "
                              f"({len(stale)} staged result(s) belong to no current batch)")
    if stale:
        log.info("ignoring %d staged result(s) of an earlier try of this run (map indexes %s): "
                 "not part of the current mapping", len(stale), [e.get("map_index") for e in stale])
    return [current[i] for i in sorted(current)], stale
