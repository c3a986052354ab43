"""The quality report reads PostgreSQL (JSONB comes back as objects, not text) exactly as
it reads DuckDB: the same runs loaded into both give the same numbers.

Real PostgreSQL (127.0.0.1:5432, user postgres, trust auth), a database of its own per test.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from extractor.pipeline.quality.report import write_report
from extractor.pipeline.warehouse import open_warehouse
from extractor.testing.quality_history import NEW, OLD, fill_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST, SWITCH, LAST = dt.date(2026, 3, 1), dt.date(2026, 3, 3), dt.date(2026, 3, 4)


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
