"""DuckDB warehouse: one file, the embedded default.

Bulk writes go through a registered pandas DataFrame (``INSERT ... SELECT``), never a
row-at-a-time ``executemany``. Values travel as text and are cast to the column types
in SQL, so Decimal stays exact (no float detour) and NULLs stay NULL.
"""

from __future__ import annotations

import contextlib
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Sequence

import extractor.pipeline.warehouse.ddl as ddl
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


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"

    def __init__(self, path: str, *, lock_timeout_s: float = 60.0):
        import duckdb

        self.path = path
        self._registered: set[str] = set()
        if path not in ("", ":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One writer process per file: parallel tasks wait for the lock instead of failing.
        deadline = time.monotonic() + lock_timeout_s
        while True:
            try:
                self.con = duckdb.connect(path or ":memory:")
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                log.info("duckdb file %s is locked by another process; waiting", path)
                time.sleep(0.5)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
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
