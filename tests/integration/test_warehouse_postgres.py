"""The warehouse contract on a real PostgreSQL (127.0.0.1:5432, user postgres, trust auth).

Each test gets a freshly created database with a unique name, dropped afterwards. The
contract tests are the same class tests/unit/test_warehouse.py runs on DuckDB.
"""

import importlib.util
import pathlib
import threading

import pytest

from extractor.pipeline.warehouse import open_warehouse

pytestmark = pytest.mark.integration


_spec = importlib.util.spec_from_file_location(
    "warehouse_contract", pathlib.Path(__file__).parents[1] / "unit" / "test_warehouse.py")
contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contract)


class TestPostgresWarehouse(contract.WarehouseContract):
    @pytest.fixture
    def open_wh(self, pg_url):
        opened = []

        def _open():
            opened.append(open_warehouse(pg_url))
            return opened[-1]

        yield _open
        for w in opened:
            if not w.conn.closed:
                w.close()


def test_airflow_style_uri_and_nul_bytes(pg_url):
    # Airflow renders connections as postgres://...?__extra__=...; model output may hold NUL.
    w = open_warehouse(pg_url.replace("postgresql://", "postgres://") + "?__extra__=%7B%7D")
    w.ensure_schema()
    r = contract.ok(1)
    r.raw_text = "TOTAL\x0012.30"
    w.load([r], [], contract.run())
    assert w.fetch("SELECT raw_text FROM receipts") == [("TOTAL\ufffd12.30",)]
    w.close()


def test_concurrent_ensure_schema_does_not_race(pg_url):
    # Mapped tasks may start together on an empty database: CREATE TABLE IF NOT EXISTS
    # alone can fail with a unique violation; the advisory lock serialises them.
    errors = []

    def create():
        try:
            w = open_warehouse(pg_url)
            w.ensure_schema()
            w.close()
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_concurrent_claims_of_the_same_receipts_give_each_to_exactly_one_run(pg_url):
    # Two runs' discoveries claim the same 300 receipts at the same moment, on two sessions.
    ids = [contract.rid(i) for i in range(300)]
    setup = open_warehouse(pg_url)
    setup.ensure_schema()
    setup.close()
    barrier, held, errors = threading.Barrier(2), {}, []

    def discover(run_id):
        w = open_warehouse(pg_url)
        try:
            barrier.wait(timeout=30)
            held[run_id] = w.claim(contract.V1, ids, run_id, ttl_s=3600)
        except Exception as exc:  # noqa: BLE001 - reported below, with the thread's run id
            errors.append(f"{run_id}: {exc!r}")
        finally:
            w.close()

    threads = [threading.Thread(target=discover, args=(name,)) for name in ("run-a", "run-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert held["run-a"] | held["run-b"] == set(ids)
    assert not held["run-a"] & held["run-b"]
