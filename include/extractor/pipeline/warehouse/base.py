"""The ``Warehouse`` interface both dialects implement, and the row building they share.

Every write is keyed by
(receipt_id, extractor_version) and happens in ONE transaction: the keys being loaded
are deleted from ``receipts``, ``receipt_line_items`` and ``quarantine`` and their new
rows inserted in bulk, and the run's row in ``runs`` is replaced. So

* re-running a load with the same input leaves identical table contents (timestamps
  come from the run record, never from ``now()``);
* a receipt is in exactly one of ``receipts`` / ``quarantine`` per extractor version: a
  receipt that now validates leaves quarantine, one that now fails leaves receipts;
* rows of other extractor versions are never touched, so switching the model back is a
  rollback, not a reload.
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import extractor.pipeline.warehouse.ddl as ddl
from extractor.pipeline.records import QuarantineRecord, RunRecord
from extractor.schema import ExtractionResult, LineItem, scalar_fields

__all__ = ["Warehouse", "Row", "RunRecord", "QuarantineRecord", "convert_placeholders"]

log = logging.getLogger(__name__)

Row = tuple[Any, ...]


# ----------------------------------------------------------------------------- values

def utc_naive(value: dt.datetime | dt.date | None) -> dt.datetime | None:
    """All warehouse timestamps are naive UTC (same type on both backends)."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def to_json(value: Any, *, lenient: bool = False) -> str | None:
    """Deterministic JSON text. ``lenient`` (run summaries, alert details: informational)
    writes unknown objects as their ``str``; row data stays strict."""
    if value is None:
        return None
    default = _lenient_default if lenient else _json_default
    return json.dumps(value, sort_keys=True, default=default, ensure_ascii=False)


def _lenient_default(value: Any) -> Any:
    try:
        return _json_default(value)
    except TypeError:
        return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ----------------------------------------------------------------------------- rows

RECEIPT_FIELDS = scalar_fields()
LINE_ITEM_FIELDS = list(LineItem.model_fields)


def receipt_row(result: ExtractionResult, run: RunRecord) -> Row:
    receipt = result.receipt
    if result.status != "ok" or receipt is None:
        raise ValueError(f"receipt {result.receipt_id} is not a valid result; quarantine it")
    loaded_at = utc_naive(run.started_at)
    values = {n: getattr(receipt, n) for n in RECEIPT_FIELDS}
    values.update(
        receipt_id=result.receipt_id, extractor_version=result.extractor_version,
        line_item_count=len(receipt.line_items), confidence=to_json(receipt.confidence),
        source=result.source, raw_text=result.raw_text, timings=to_json(result.timings),
        model_id=run.model_id, revision=run.revision, prompt_version=run.prompt_version,
        run_id=run.run_id, loaded_at=loaded_at,
        needs_review=result.review_reason is not None, review_reason=result.review_reason)
    return tuple(values[c] for c in ddl.RECEIPTS.column_names)


def line_item_rows(result: ExtractionResult, run: RunRecord) -> list[Row]:
    assert result.receipt is not None
    rows = []
    for line_no, item in enumerate(result.receipt.line_items, start=1):
        values = {n: getattr(item, n) for n in LINE_ITEM_FIELDS}
        values.update(receipt_id=result.receipt_id, extractor_version=result.extractor_version,
                      line_no=line_no, run_id=run.run_id)
        rows.append(tuple(values[c] for c in ddl.LINE_ITEMS.column_names))
    return rows


def quarantine_row(record: QuarantineRecord, run: RunRecord) -> Row:
    values = dict(
        receipt_id=record.receipt_id, extractor_version=record.extractor_version,
        stage=record.stage, reason=record.reason,
        failed_expectations=to_json(list(record.failed_expectations)),
        receipt=to_json(record.receipt), source=record.source, raw_text=record.raw_text,
        timings=to_json(record.timings), model_id=run.model_id, revision=run.revision,
        prompt_version=run.prompt_version, run_id=run.run_id,
        quarantined_at=utc_naive(run.started_at))
    return tuple(values[c] for c in ddl.QUARANTINE.column_names)


def run_row(run: RunRecord) -> Row:
    values = dict(
        run_id=run.run_id, dag_id=run.dag_id, logical_date=utc_naive(run.logical_date),
        partition_start=utc_naive(run.partition_start), partition_end=utc_naive(run.partition_end),
        extractor_version=run.extractor_version, model_id=run.model_id, revision=run.revision,
        prompt_version=run.prompt_version, started_at=utc_naive(run.started_at),
        finished_at=utc_naive(run.finished_at), counts=to_json(run.counts, lenient=True),
        timings=to_json(run.timings, lenient=True), decision=run.decision,
        summary=to_json(run.summary, lenient=True), extractor_origin=run.extractor_origin)
    return tuple(values[c] for c in ddl.RUNS.column_names)


def _dedupe_quarantine(records: Iterable[QuarantineRecord]) -> list[QuarantineRecord]:
    """One quarantine row per key: the same image twice in a batch is one receipt."""
    by_key: dict[tuple[str, str], QuarantineRecord] = {}
    for rec in records:
        key = (rec.receipt_id, rec.extractor_version)
        if key in by_key:
            kept = by_key[key]
            if rec.source != kept.source and rec.source not in kept.reason:
                kept.reason = f"{kept.reason} (same image also at {rec.source})"
            continue
        by_key[key] = QuarantineRecord(**rec.to_dict())
    return list(by_key.values())


# ----------------------------------------------------------------------------- interface

_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def convert_placeholders(sql: str, to: str) -> str:
    """Let callers write either ``?`` or ``%s`` placeholders on both backends."""
    src, dst = ("%s", "?") if to == "qmark" else ("?", "%s")
    out, pos = [], 0
    for m in _QUOTED.finditer(sql):
        out.append(sql[pos:m.start()].replace(src, dst))
        out.append(m.group(0))
        pos = m.end()
    out.append(sql[pos:].replace(src, dst))
    return "".join(out)


class Warehouse(abc.ABC):
    """What the pipeline needs from a warehouse; subclasses supply the bulk primitives."""

    dialect: str

    # -- primitives each backend implements --------------------------------------------
    @abc.abstractmethod
    def _transaction(self): ...  # context manager: commit on success, roll back on error

    @abc.abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    @abc.abstractmethod
    def _insert_rows(self, table: ddl.Table, rows: list[Row]) -> None: ...

    @abc.abstractmethod
    def _delete_keys(self, tables: Sequence[ddl.Table], keys: list[tuple[str, str]]) -> dict[str, int]: ...

    @abc.abstractmethod
    def _existing_columns(self, table: str) -> set[str]: ...

    @abc.abstractmethod
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def publish_snapshot(self, target: str | None) -> Any:
        """A copy for readers that must not hold the live database (DuckDB only; on
        PostgreSQL readers never block the load, so there is nothing to publish)."""
        return None

    def _lock_schema(self) -> None:  # noqa: B027 - optional hook: DuckDB has one writer anyway
        """Serialise concurrent ensure_schema calls (PostgreSQL: an advisory lock)."""

    # -- the contract ----------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create missing tables and add columns the schema gained since (never drops)."""
        with self._transaction():
            self._lock_schema()
            for table in ddl.TABLES:
                self._execute(table.create_sql(self.dialect))
                existing = self._existing_columns(table.name)
                for col in table.columns:
                    if col.name not in existing:
                        nullable = ddl.Column(col.name, col.sql_type)  # cannot add NOT NULL to old rows
                        self._execute(f'ALTER TABLE "{table.name}" ADD COLUMN {nullable.render(self.dialect)}')
                        log.info("warehouse: added column %s.%s", table.name, col.name)
            # views last, over the final columns (r.* keeps the tables' physical order, so a
            # column added above only appends to the view and CREATE OR REPLACE accepts it)
            for view in ddl.VIEWS:
                # dropped first: PostgreSQL only lets CREATE OR REPLACE append columns, and a
                # view's column list follows the DDL order (same transaction: readers never
                # see it missing)
                self._execute(f'DROP VIEW IF EXISTS "{view.name}"')
                self._execute(view.create_sql(self.dialect))

    def load(self, valid: Sequence[ExtractionResult], quarantined: Sequence[QuarantineRecord],
             run: RunRecord) -> dict[str, int]:
        """Upsert one run's receipts, line items, quarantine rows and run row, atomically."""
        if run.started_at is None:
            raise ValueError("RunRecord.started_at is required: it stamps loaded_at, so "
                             "re-running the same run writes identical rows")
        valid_keys = [(r.receipt_id, r.extractor_version) for r in valid]
        if len(set(valid_keys)) != len(valid_keys):
            raise ValueError("duplicate (receipt_id, extractor_version) among valid results; "
                             "validation must quarantine duplicates")
        quarantined = _dedupe_quarantine(quarantined)
        q_keys = [(q.receipt_id, q.extractor_version) for q in quarantined]
        both = set(valid_keys) & set(q_keys)
        if both:
            raise ValueError(f"{len(both)} receipts are both valid and quarantined, e.g. {next(iter(both))}")
        receipts = [receipt_row(r, run) for r in valid]
        items = [row for r in valid for row in line_item_rows(r, run)]
        q_rows = [quarantine_row(q, run) for q in quarantined]
        with self._transaction():
            deleted = self._delete_keys((ddl.RECEIPTS, ddl.LINE_ITEMS, ddl.QUARANTINE, ddl.CLAIMS),
                                        valid_keys + q_keys)  # loaded: no longer claimed
            self._execute('DELETE FROM "runs" WHERE "run_id" = ?', (run.run_id,))
            self._insert_rows(ddl.RECEIPTS, receipts)
            self._insert_rows(ddl.LINE_ITEMS, items)
            self._insert_rows(ddl.QUARANTINE, q_rows)
            self._insert_rows(ddl.RUNS, [run_row(run)])
        counts = {"receipts": len(receipts), "line_items": len(items), "quarantined": len(q_rows),
                  "replaced_receipts": deleted.get("receipts", 0),
                  "replaced_quarantine": deleted.get("quarantine", 0)}
        log.info("warehouse load run_id=%s %s", run.run_id, counts)
        return counts

    def already_extracted(self, extractor_version: str, receipt_ids: Iterable[str]) -> set[str]:
        """Ids that have a row in receipts or quarantine for this extractor version."""
        ids = sorted(set(receipt_ids))
        if not ids:
            return set()
        found: set[str] = set()
        for table in ("receipts", "quarantine"):
            found.update(r[0] for r in self._fetch_ids(table, extractor_version, ids))
        return found

    def claim(self, extractor_version: str, receipt_ids: Sequence[str], run_id: str, *,
              ttl_s: float, now: dt.datetime | None = None) -> set[str]:
        """Claim the ids for ``run_id``; returns those the run holds (new claims, its own
        earlier ones, expired ones taken over). Ids held by another run are left out.

        One transaction; concurrent claims of one id serialise on its primary key (the
        second insert waits for the first to commit, then does nothing)."""
        ids = sorted(set(receipt_ids))
        if not ids:
            return set()
        now = utc_naive(now or dt.datetime.now(dt.UTC))
        expires = now + dt.timedelta(seconds=ttl_s)
        listed = self._ids_from_array()
        with self._transaction():
            self._execute('DELETE FROM "extraction_claims" WHERE "expires_at" < ? '
                          f'AND "extractor_version" = ? AND "receipt_id" IN ({listed})',
                          (now, extractor_version, ids))
            self._execute('INSERT INTO "extraction_claims" ("receipt_id", "extractor_version", '
                          '"run_id", "claimed_at", "expires_at") '
                          f'SELECT receipt_id, ?, ?, ?, ? FROM ({listed}) AS ids '
                          'ON CONFLICT DO NOTHING', (extractor_version, run_id, now, expires, ids))
            rows = self.fetch('SELECT "receipt_id" FROM "extraction_claims" WHERE "run_id" = ? '
                              f'AND "extractor_version" = ? AND "receipt_id" IN ({listed})',
                              (run_id, extractor_version, ids))
        return {r[0] for r in rows}

    def release_claims(self, run_id: str) -> None:
        """Drop every claim a run holds (it failed: the day's next run may take them)."""
        self.execute('DELETE FROM "extraction_claims" WHERE "run_id" = ?', (run_id,))

    def _ids_from_array(self) -> str:
        """A SELECT of one ``receipt_id`` column from a list parameter (``?``)."""
        return "SELECT unnest(CAST(? AS TEXT[])) AS receipt_id"

    @abc.abstractmethod
    def _fetch_ids(self, table: str, extractor_version: str, ids: list[str]) -> list[tuple]: ...

    def record_alert(self, run_id: str | None, level: str, message: str, details: dict,
                     notified: dict | None = None) -> str:
        """Append an alert row (alerts are events: never replaced); returns its id."""
        alert_id = uuid.uuid4().hex
        row = dict(alert_id=alert_id, run_id=run_id, level=level, message=message,
                   details=to_json(details, lenient=True), notified=to_json(notified),
                   created_at=utc_naive(dt.datetime.now(dt.UTC)))
        with self._transaction():
            self._insert_rows(ddl.ALERTS, [tuple(row[c] for c in ddl.ALERTS.column_names)])
        return alert_id

    def replace_rows(self, table: ddl.Table, rows: Sequence[Row]) -> None:
        """Insert rows, replacing those with the same primary key, in one transaction
        (small volumes: one DELETE per row; bulk loads go through ``load``)."""
        positions = [table.column_names.index(k) for k in table.primary_key]
        where = " AND ".join(f'"{k}" = ?' for k in table.primary_key)
        with self._transaction():
            for row in rows:
                self._execute(f'DELETE FROM "{table.name}" WHERE {where}', [row[i] for i in positions])
            self._insert_rows(table, list(rows))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement in its own transaction (``?`` or ``%s`` placeholders)."""
        with self._transaction():
            self._execute(sql, params)

    def snapshot(self, tables: Sequence[str] = ("receipts", "receipt_line_items", "quarantine", "runs")
                 ) -> dict[str, list[tuple]]:
        """Every row of the given tables in primary-key order: what idempotency tests compare."""
        by_name = {t.name: t for t in ddl.TABLES}
        out = {}
        for name in tables:
            order = ", ".join(f'"{k}"' for k in by_name[name].primary_key)
            out[name] = self.fetch(f'SELECT * FROM "{name}" ORDER BY {order}')
        return out

    def table_counts(self) -> dict[str, int]:
        return {t.name: self.fetch(f'SELECT count(*) FROM "{t.name}"')[0][0] for t in ddl.TABLES}

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
