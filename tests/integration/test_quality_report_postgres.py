"""The quality report reads PostgreSQL (JSONB comes back as objects, not text) exactly as
it reads DuckDB: the same runs loaded into both give the same numbers.

Real PostgreSQL (127.0.0.1:5432, user postgres, trust auth), a database of its own per test.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import pytest

from extractor.pipeline.quality.report import write_report
from extractor.pipeline.warehouse import open_warehouse
from extractor.testing.quality_history import NEW, OLD, fill_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PG_ADMIN = os.environ.get("RECEIPT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
FIRST, SWITCH, LAST = dt.date(2026, 3, 1), dt.date(2026, 3, 3), dt.date(2026, 3, 4)


@pytest.fixture
def pg_url():
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
    name = f"test_quality_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _report(url: str, out) -> dict:
    warehouse = open_warehouse(url)
    try:
        warehouse.ensure_schema()
        fill_history(warehouse, FIRST, SWITCH, LAST, receipts=20)
        write_report(warehouse, out, days=4, end=LAST)
    finally:
        warehouse.close()
    return json.loads((out / "report.json").read_text())


def test_postgres_and_duckdb_give_the_same_report(pg_url, tmp_path):
    on_postgres = _report(pg_url, tmp_path / "pg")
    on_duckdb = _report(f"duckdb:///{tmp_path / 'wh.duckdb'}", tmp_path / "duck")
    assert on_postgres == on_duckdb
    assert set(on_postgres["versions"]) == {OLD, NEW} and on_postgres["runs"] == 4
    assert on_postgres["versions"][OLD]["mean_confidence"] is not None
