"""Fixtures the integration tests share."""

from __future__ import annotations

import os
import uuid

import pytest

PG_ADMIN = os.environ.get("RECEIPT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test (other sessions' tests may run beside it),
    dropped afterwards; the test skips, saying why, when no server answers."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
    name = f"test_wh_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
