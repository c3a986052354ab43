"""PostgreSQL warehouse (production), through psycopg 3.

Bulk writes use ``COPY ... FROM STDIN``; the keys of a load are COPYed into a
transaction-scoped temp table and deleted with ``DELETE ... USING``, so a load of
10,000 receipts is a handful of statements, not 10,000 round trips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import extractor.pipeline.warehouse.ddl as ddl
from extractor.pipeline.warehouse.base import Row, Warehouse, convert_placeholders
from extractor.redaction import redact_text, url_secrets

# Any constant works; it only has to be the same in every process that creates the schema.
_SCHEMA_LOCK_ID = 0x5EC1_2024


def normalise_uri(uri: str) -> str:
    """Accept what Airflow renders (``postgres://``, ``postgresql+psycopg2://``, a
    connection's extra as the query) and hand libpq a URI it understands: the query keeps
    the parameters libpq knows (``sslmode``, ``connect_timeout`` ...) and drops the rest
    (``__extra__``, ``sqlalchemy_scheme``, ``cursor`` ...), which libpq would refuse."""
    import psycopg

    known = {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k in known]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), parts.fragment))


def _clean(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; model output sometimes does.
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class PostgresWarehouse(Warehouse):
    dialect = "postgres"

    def __init__(self, uri: str, *, connect_timeout: int = 10):
        import psycopg

        redacted: Exception | None = None
        try:
            self.uri = normalise_uri(uri)
            self.conn = psycopg.connect(self.uri, connect_timeout=connect_timeout, autocommit=True)
        except (ValueError, psycopg.Error) as exc:
            # libpq quotes a malformed URI or token, password included: never let it travel
            message = redact_text(str(exc), url_secrets(uri))
            if message == str(exc):
                raise
            redacted = type(exc)(message)
        if redacted is not None:
            raise redacted  # outside the except block: no __context__ holding the original
        # JSON columns come back as text, as they do from DuckDB: one behaviour for callers.
        from psycopg.types.json import set_json_loads
        set_json_loads(lambda text: text.decode() if isinstance(text, bytes) else text, self.conn)

    @contextlib.contextmanager
    def _transaction(self) -> Generator[None, None, None]:
        with self.conn.transaction():
            yield

    def _lock_schema(self) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.execute(convert_placeholders(sql, "format"), tuple(params) or None)
        return cur.rowcount

    def _insert_rows(self, table: ddl.Table, rows: list[Row]) -> None:
        if not rows:
            return
        cols = ", ".join(f'"{n}"' for n in table.column_names)
        with self.conn.cursor() as cur:
            with cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(tuple(_clean(v) for v in row))

    def _delete_keys(self, tables: Sequence[ddl.Table], keys: list[tuple[str, str]]) -> dict[str, int]:
        if not keys:
            return {}
        deleted = {}
        with self.conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS _load_keys "
                        "(receipt_id TEXT, extractor_version TEXT) ON COMMIT DELETE ROWS")
            with cur.copy("COPY _load_keys (receipt_id, extractor_version) FROM STDIN") as copy:
                for key in keys:
                    copy.write_row(key)
            cur.execute("ANALYZE _load_keys")  # a temp table has no statistics otherwise
            for table in tables:
                cur.execute(f'DELETE FROM "{table.name}" AS t USING _load_keys AS k '
                            "WHERE t.receipt_id = k.receipt_id "
                            "AND t.extractor_version = k.extractor_version")
                deleted[table.name] = cur.rowcount
        return deleted

    def _existing_columns(self, table: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = current_schema()", (table,)).fetchall()
        return {r[0] for r in rows}

    def _fetch_ids(self, table: str, extractor_version: str, ids: list[str]) -> list[tuple]:
        return self.conn.execute(
            f'SELECT DISTINCT receipt_id FROM "{table}" WHERE extractor_version = %s '
            "AND receipt_id = ANY(%s)", (extractor_version, ids)).fetchall()

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.conn.execute(convert_placeholders(sql, "format"), tuple(params) or None).fetchall()

    def close(self) -> None:
        self.conn.close()
