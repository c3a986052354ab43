"""The warehouse behind one interface: DuckDB (embedded default) or PostgreSQL.

``open_warehouse(url)`` picks the dialect from the URL; ``base`` holds the interface and
what both dialects share, ``ddl`` the tables generated from the schema. Drivers (duckdb,
psycopg) are imported by the dialect that needs them.
"""

from __future__ import annotations

import re
from typing import Any

from extractor.pipeline.warehouse.base import Warehouse
from extractor.redaction import redact_url

__all__ = ["Warehouse", "open_warehouse"]


def open_warehouse(url: str, **options: Any) -> Warehouse:
    """``duckdb:///relative/path.duckdb``, ``duckdb:////abs/path.duckdb``, ``duckdb:///:memory:``
    or a ``postgresql://user@host:port/db`` URI (``postgres://`` and ``postgresql+driver://``
    are accepted too, as Airflow connections render them)."""
    if url.startswith("duckdb://"):
        from extractor.pipeline.warehouse.duckdb_backend import DuckDBWarehouse
        return DuckDBWarehouse(url[len("duckdb:///"):] if url.startswith("duckdb:///") else
                               url[len("duckdb://"):], **options)
    if re.match(r"postgres(ql)?(\+\w+)?://", url):
        from extractor.pipeline.warehouse.postgres_backend import PostgresWarehouse
        return PostgresWarehouse(url, **options)
    raise ValueError(f"unsupported warehouse URL {redact_url(url)!r}: "
                     "use duckdb:///path or postgresql://...")
