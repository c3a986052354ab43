"""The warehouse URL comes from the Airflow connection's own URI (no hand-built URL): the
libpq options of its extra reach PostgreSQL, the Airflow-only keys do not (libpq would
refuse them). Real Airflow connection lookup (``AIRFLOW_CONN_*``), real PostgreSQL."""

from __future__ import annotations

import os

import pytest

from extractor.pipeline import tasks
from extractor.pipeline.config import load_config
from extractor.pipeline.warehouse.postgres_backend import PostgresWarehouse, normalise_uri

pytestmark = pytest.mark.integration

PG_HOST = os.environ.get("RECEIPT_TEST_PG_HOST", "127.0.0.1:5432")


def test_connection_uri_with_extras_reaches_postgres(monkeypatch):
    monkeypatch.delenv("RECEIPT_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_RECEIPTS_WAREHOUSE",
        f"postgres://postgres@{PG_HOST}/postgres?sslmode=disable&application_name=receipts-conn-test"
        "&cursor=dictcursor&sqlalchemy_scheme=postgresql%2Bpsycopg")
    cfg = load_config({}.get, warehouse_conn_exists=True)
    url = tasks.warehouse_url(cfg)
    assert url.startswith("postgres://postgres@")  # the connection's own URI, extra as query
    assert normalise_uri(url) == (f"postgresql://postgres@{PG_HOST}/postgres"
                                  "?sslmode=disable&application_name=receipts-conn-test")
    try:
        warehouse = PostgresWarehouse(url)
    except Exception as exc:  # the psycopg error types vary with what is missing
        pytest.skip(f"no PostgreSQL at {PG_HOST}: {exc}")
    try:
        [(name,)] = warehouse.fetch("SELECT current_setting('application_name')")
    finally:
        warehouse.close()
    assert name == "receipts-conn-test"  # an extra key reached the server


def test_password_with_url_characters_survives():
    """The connection quotes its own fields: a password with '@', '/' and ':' stays one field."""
    from airflow.sdk import Connection

    conn = Connection(conn_id="receipts_warehouse", conn_type="postgres", host="db.internal",
                      login="etl", password="p@ss/w:rd", port=5432, schema="receipts",
                      extra='{"sslmode": "require"}')
    assert normalise_uri(conn.get_uri()) == \
        "postgresql://etl:p%40ss%2Fw%3Ard@db.internal:5432/receipts?sslmode=require"
