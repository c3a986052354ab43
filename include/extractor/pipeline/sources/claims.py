"""Claims: a receipt is extracted by one run at a time, even when two runs of its day overlap.

Two runs of one partition can be live at once: a manual trigger beside the scheduled
run, a backfill over a day whose run is still going, a cleared run next to a retry.
Discovery skips what the warehouse already holds, but receipts in flight (discovered,
not yet loaded) are in no table yet, so both runs would extract them: the rows end up
right (the load upserts), the GPU work is done twice.

So discovery claims what it is about to extract: a row per (receipt id, extractor
version) in the warehouse table ``extraction_claims``, inserted in one transaction with
``ON CONFLICT DO NOTHING``. A receipt claimed by another run is left to that run and
counted (``claimed_by_other_run``); the load deletes the claims of what it wrote in the
same transaction; a failed run's callback deletes its claims; a claim older than its
time to live (``claim_ttl_hours`` in ``receipts_config``, a run killed before any callback) may be
taken over. A retry or a clear of the same run keeps its own claims.

Why claims and not a lock per partition: a lock would have to be held from discovery to
the load, across several task processes on several hosts, and it would make the second
run wait (holding a worker slot) or fail; a claim is a row, written where the results go
(so it is as durable and as shared as they are), per receipt (so a late receipt that
only the second run sees is still extracted by it), and it expires on its own. With
DuckDB, claims serialise on the file lock like every other write; with PostgreSQL two
concurrent claims of one id serialise on its primary key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

Receipt = TypeVar("Receipt")
Claim = Callable[[list[str]], set[str]]  # ids -> the ids this run now holds


def claim_batches(batches: Sequence[Sequence[Receipt]], claim: Claim, batch_size: int,
                  receipt_id: Callable[[Receipt], str]) -> tuple[list[list[Receipt]], int]:
    """The discovered batches cut down to what this run holds a claim on, re-batched;
    and how many receipts another run holds."""
    receipts = [r for batch in batches for r in batch]
    held = claim([receipt_id(r) for r in receipts]) if receipts else set()
    mine = [r for r in receipts if receipt_id(r) in held]
    return ([mine[i:i + batch_size] for i in range(0, len(mine), batch_size)],
            len(receipts) - len(mine))
