"""DuckDB warehouse: one file, the embedded default.

Bulk writes go through a registered pandas DataFrame (``INSERT ... SELECT``), never a
row-at-a-time ``executemany``. Values travel as text and are cast to the column types
in SQL, so Decimal stays exact (no float detour) and NULLs stay NULL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Generator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import extractor.pipeline.warehouse.ddl as ddl
from extractor.errors import WarehouseBusyError
from extractor.pipeline.warehouse.base import Row, Warehouse, convert_placeholders

log = logging.getLogger(__name__)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def _connect(path: str, lock_timeout_s: float):
    """A read-write connection. Another process holding the file (a writer, or a reader:
    DuckDB's read-only connections lock it too) makes this wait with growing pauses, one
    log line, then raise ``WarehouseBusyError`` with one line that names the holder."""
    import duckdb

    started, pause, logged = time.monotonic(), 0.2, False
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            holder = _lock_holder(str(exc))
        waited = time.monotonic() - started
        if waited >= lock_timeout_s:
            raise WarehouseBusyError(
                f"warehouse {path} is locked by {holder} (waited {waited:.0f} s): close that "
                f"connection; analysts read the snapshot copy (see docs/reliability.md)") from None
        if not logged:
            log.warning("warehouse %s is locked by %s: waiting up to %.0f s", path, holder, lock_timeout_s)
            logged = True
        time.sleep(min(pause, max(0.0, lock_timeout_s - waited)))
        pause = min(pause * 2, 5.0)


def _lock_holder(message: str) -> str:
    """"PID 123 (/usr/bin/python3)" from DuckDB's lock error, or "another process"."""
    found = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    return f"PID {found.group(2)} ({found.group(1)})" if found else "another process"


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"

    def __init__(self, path: str, *, lock_timeout_s: float = 60.0):
        self.path = path
        self._registered: set[str] = set()
        if path not in ("", ":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.con = _connect(path or ":memory:", lock_timeout_s)

    def publish_snapshot(self, target: str | None) -> Path | None:
        """Copy the file, as of now, to ``target`` ("auto": ``<name>.snapshot.duckdb`` beside
        it) for readers: analysts open the copy read-only at any time, and their lock is on
        the copy, never on the file the pipeline writes. Written to a temporary sibling and
        renamed into place, so a reader opens the old copy or the new one, never half of it."""
        if target is None or self.path in ("", ":memory:"):
            return None
        source = Path(self.path)
        dest = source.with_suffix(".snapshot.duckdb") if target == "auto" else Path(target)
        self.con.execute("CHECKPOINT")  # everything committed is in the main file, not the WAL
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    @contextlib.contextmanager
    def _transaction(self) -> Generator[None, None, None]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            self._unregister_all()  # only possible once the aborted transaction is gone
            raise
        self.con.execute("COMMIT")

    def _register(self, name: str, frame: Any) -> None:
        self.con.register(name, frame)
        self._registered.add(name)

    def _unregister_all(self) -> None:
        for name in sorted(self._registered):
            self.con.unregister(name)
        self._registered.clear()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.con.execute(convert_placeholders(sql, "qmark"), list(params))
        return 0

    def _insert_rows(self, table: ddl.Table, rows: list[Row]) -> None:
        if not rows:
            return
        import pandas as pd

        names = table.column_names
        frame = pd.DataFrame({name: pd.array([_text(r[i]) for r in rows], dtype=object)
                              for i, name in enumerate(names)})
        select = ", ".join(f'CAST("{c.name}" AS {c.render("duckdb").split(" ", 1)[1].replace(" NOT NULL", "")})'
                           for c in table.columns)
        # No try/finally here: inside an aborted transaction unregister() would fail and
        # hide the real error; _transaction() unregisters after the rollback instead.
        self._register("_bulk_rows", frame)
        cols = ", ".join(f'"{n}"' for n in names)
        self.con.execute(f'INSERT INTO "{table.name}" ({cols}) SELECT {select} FROM _bulk_rows')
        self._unregister_all()

    def _delete_keys(self, tables: Sequence[ddl.Table], keys: list[tuple[str, str]]) -> dict[str, int]:
        if not keys:
            return {}
        import pandas as pd

        frame = pd.DataFrame({"receipt_id": pd.array([k[0] for k in keys], dtype=object),
                              "extractor_version": pd.array([k[1] for k in keys], dtype=object)})
        deleted = {}
        self._register("_load_keys", frame)
        for table in tables:
            n = self.con.execute(
                f'DELETE FROM "{table.name}" AS t USING _load_keys AS k '
                f'WHERE t.receipt_id = k.receipt_id AND t.extractor_version = k.extractor_version'
            ).fetchone()
            deleted[table.name] = int(n[0]) if n else 0
        self._unregister_all()
        return deleted

    def _existing_columns(self, table: str) -> set[str]:
        rows = self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = current_schema()", [table]).fetchall()
        return {r[0] for r in rows}

    def _fetch_ids(self, table: str, extractor_version: str, ids: list[str]) -> list[tuple]:
        return self.con.execute(
            f'SELECT DISTINCT receipt_id FROM "{table}" WHERE extractor_version = ? '
            f'AND receipt_id IN (SELECT unnest(?::VARCHAR[]))', [extractor_version, ids]).fetchall()

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.con.execute(convert_placeholders(sql, "qmark"), list(params)).fetchall()

    def close(self) -> None:
        self.con.close()
