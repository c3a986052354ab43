"""DuckDB readers and the pipeline's writes: a reader holding the file makes a task wait a
bounded time and then fail with one line, writing nothing; analysts read the snapshot copy
the load publishes, which never blocks the pipeline. Readers are real processes (DuckDB's
lock is per process, so a reader in this process would not show it)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest
from test_warehouse import V1, bad, ok, run

from extractor.errors import WarehouseBusyError
from extractor.pipeline.warehouse import open_warehouse

READER = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("SELECT count(*) FROM receipts").fetchone()[0], flush=True)
time.sleep(float(sys.argv[2]))
print(con.execute("SELECT count(*) FROM receipts").fetchone()[0], flush=True)
"""


def _reader(path, seconds: float) -> tuple[subprocess.Popen, int]:
    """An analyst's read-only session on ``path`` (started, holding the file)."""
    proc = subprocess.Popen([sys.executable, "-c", READER, str(path), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.strip().isdigit(), proc.stderr.read()
    return proc, int(first)


@pytest.fixture
def loaded(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    w = open_warehouse(f"duckdb:///{path}")
    w.ensure_schema()
    w.load([ok(1), ok(2)], [bad(3)], run("run-1"))
    w.close()
    return path


def _backend_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "extractor.pipeline.warehouse.duckdb_backend"]


def test_a_reader_holding_the_file_fails_the_load_with_one_line_and_nothing_written(loaded, caplog):
    reader, _ = _reader(loaded, 30)
    caplog.set_level(logging.INFO)
    try:
        t0 = time.monotonic()
        with pytest.raises(WarehouseBusyError) as info:
            open_warehouse(f"duckdb:///{loaded}", lock_timeout_s=2)
        waited = time.monotonic() - t0
    finally:
        reader.kill()
        reader.wait()
    message = str(info.value)
    assert "\n" not in message and f"PID {reader.pid}" in message and "snapshot" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no driver traceback
    assert 2 <= waited < 10  # bounded
    assert [r.levelname for r in _backend_records(caplog)] == ["WARNING"]  # one "waiting" line
    w = open_warehouse(f"duckdb:///{loaded}")
    assert w.table_counts()["receipts"] == 2 and w.table_counts()["runs"] == 1  # untouched
    w.close()


def test_a_task_turns_the_busy_warehouse_into_one_airflow_error_line(loaded, caplog):
    from airflow.sdk.exceptions import AirflowException

    from extractor.pipeline import config, tasks

    settings = {"warehouse_url": f"duckdb:///{loaded}", "warehouse_lock_timeout_s": 1}
    cfg = config.load_config({"receipts_config": json.dumps(settings)}.get)
    reader, _ = _reader(loaded, 30)
    try:
        with pytest.raises(AirflowException) as info:
            tasks.open_warehouse(cfg)
    finally:
        reader.kill()
        reader.wait()
    assert type(info.value) is AirflowException  # retried by Airflow, not failed for good
    assert "\n" not in str(info.value) and "is locked by PID" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_reader_that_leaves_within_the_wait_only_delays_the_load(loaded, caplog):
    reader, _ = _reader(loaded, 1.0)
    caplog.set_level(logging.INFO)
    w = open_warehouse(f"duckdb:///{loaded}", lock_timeout_s=30)
    w.load([ok(4)], [], run("run-2"))
    w.close()
    reader.wait(30)
    assert [r.levelname for r in _backend_records(caplog)] == ["WARNING"]


def test_analysts_read_the_snapshot_while_the_pipeline_writes(loaded):
    w = open_warehouse(f"duckdb:///{loaded}")
    snapshot = w.publish_snapshot("auto")
    w.close()
    assert snapshot == loaded.with_name("warehouse.snapshot.duckdb")
    reader, seen = _reader(snapshot, 3.0)  # an analyst's session on the copy, held open
    try:
        t0 = time.monotonic()
        w = open_warehouse(f"duckdb:///{loaded}", lock_timeout_s=1)  # not blocked by the reader
        w.load([ok(5), ok(6)], [], run("run-3", version=V1))
        assert w.publish_snapshot("auto") == snapshot  # replaced while the reader holds the old one
        w.close()
        assert time.monotonic() - t0 < 2.5
    finally:
        out, _ = reader.communicate(timeout=30)
    assert seen == 2 and out.split() == ["2"]  # the session kept a consistent view
    fresh, now = _reader(snapshot, 0)
    fresh.wait(30)
    assert now == 4  # the next session sees the new load
    assert not list(loaded.parent.glob(".*.tmp"))


def test_concurrency_settings_come_from_variables_or_environment(monkeypatch, tmp_path):
    from extractor.errors import ConfigError
    from extractor.pipeline import config

    for key in ("RECEIPT_CLAIM_TTL_HOURS", "RECEIPT_WAREHOUSE_LOCK_TIMEOUT_S", "RECEIPT_WAREHOUSE_SNAPSHOT"):
        monkeypatch.delenv(key, raising=False)
    cfg = config.load_config({}.get)
    assert (cfg.claim_ttl_hours, cfg.warehouse_lock_timeout_s, cfg.warehouse_snapshot) == (12.0, 60.0, "auto")
    monkeypatch.setenv("RECEIPT_WAREHOUSE_SNAPSHOT", "off")
    cfg = config.load_config({"receipts_config": {"claim_ttl_hours": 0.5,
                                                  "warehouse_lock_timeout_s": 5}}.get)
    assert (cfg.claim_ttl_hours, cfg.warehouse_lock_timeout_s, cfg.warehouse_snapshot) == (0.5, 5.0, None)
    cfg = config.load_config({"receipts_config": {"warehouse_snapshot": str(tmp_path / "copy.duckdb")}}.get)
    assert cfg.warehouse_snapshot == str(tmp_path / "copy.duckdb")
    for bad_value in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match="claim_ttl_hours"):
            config.load_config({"receipts_config": {"claim_ttl_hours": bad_value}}.get)
