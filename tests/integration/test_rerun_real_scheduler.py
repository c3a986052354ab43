"""Re-runs and overlapping runs of ``receipts_daily`` under a real scheduler.

``dag.test()`` cannot show these: each of its re-runs is a new run, and it runs one task
at a time. Here the deployment is real processes (tests/integration/airflow_cluster.py):
api-server, scheduler with the LocalExecutor, dag-processor, metadata in a fresh
PostgreSQL database and a PostgreSQL warehouse (both dropped afterwards).

1. ``airflow backfill create`` over three days, then the same with
   ``--reprocess-behavior completed`` (Airflow clears the three runs: a new try of each,
   whose discovery finds nothing new, or one new receipt on day 3, so the new mapping of
   ``extract`` is smaller than the last try's), then one run cleared through the REST
   API. Every run succeeds, rows loaded before are untouched, nothing is duplicated.
   (Before the fix every reprocessed run failed in ``validate_and_load``: the extract
   task instances that the smaller mapping removed still handed their old results on.)
2. Two runs of one day at the same time: run A is held at its load (a test transaction
   locks ``receipt_line_items``, which A's load must write), run B starts while A holds
   its claims. B extracts nothing (``claimed_by_other_run``), succeeds; A finishes once
   the lock goes. Each receipt was extracted once and loaded once.
3. The task process of a running ``extract`` is killed with SIGKILL after its first model
   batch was staged; the cleared run's new try extracts only the model batches that were
   not staged.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import airflow_cluster as ac

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DAYS = [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
OVERLAP_DAY = dt.date(2026, 3, 4)
STARTUP_TIMEOUT_S = 300
RUN_TIMEOUT_S = 480
EXTRACTOR = {"preset": "ocr", "batch_size": 1}  # one receipt per extract task: a day of 2 maps 2


def _services_reachable() -> str | None:
    try:
        ac.query("postgres", "SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server to test against"
        return f"PostgreSQL at {ac.PG_HOST}:{ac.PG_PORT} unreachable: {exc}"
    return None


def _midnight(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00+00:00"


class Deployment:
    def __init__(self, root: Path, warehouse_db: str, cluster: ac.AirflowCluster):
        self.root, self.warehouse_db, self.cluster = root, warehouse_db, cluster

    def put(self, day: dt.date, name: str, seed: int) -> None:
        from extractor.testing.synthetic import render_receipt

        data, _ = render_receipt(seed, date=(day - dt.timedelta(days=1)).isoformat())
        folder = self.root / "incoming" / f"dt={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    def warehouse(self, sql: str, params=()) -> list[tuple]:
        return ac.query(self.warehouse_db, sql, params)

    def rows(self) -> dict[str, list[tuple]]:
        """Every receipt / line item / quarantine row, lineage included (JSON as text)."""
        def plain(row):
            return tuple(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
                         for v in row)
        return {t: sorted((plain(r) for r in self.warehouse(f"SELECT * FROM {t}")), key=repr)
                for t in ("receipts", "receipt_line_items", "quarantine")}

    def runs(self, where: str = "TRUE", params=()) -> list[tuple]:
        return self.cluster.metadata(
            f"SELECT run_id, state, run_type FROM dag_run WHERE dag_id = 'receipts_daily' "
            f"AND {where} ORDER BY logical_date", params)

    def wait_runs_done(self, run_ids: list[str], what: str) -> list[str]:
        def done():
            states = [s for (s,) in (self.cluster.metadata(
                "SELECT state FROM dag_run WHERE run_id = %s", (r,))[0] for r in run_ids)]
            return states if all(s in ("success", "failed") for s in states) else None
        return self.cluster.wait_for(what, done, RUN_TIMEOUT_S)

    def wait_backfills_done(self) -> None:
        self.cluster.wait_for("the backfill to complete", lambda: not self.cluster.metadata(
            "SELECT id FROM backfill WHERE completed_at IS NULL"), RUN_TIMEOUT_S)

    def task_states(self, run_id: str) -> list[tuple]:
        return self.cluster.metadata(
            "SELECT task_id, map_index, state, try_number FROM task_instance "
            "WHERE run_id = %s ORDER BY task_id, map_index", (run_id,))

    def failure_report(self, run_ids: list[str]) -> str:
        return "\n".join(f"{r}: {self.task_states(r)}" for r in run_ids) + "\n" + self.cluster.diagnostics()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    if reason := _services_reachable():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("rerun")
    warehouse_db = f"receipts_wh_{os.urandom(5).hex()}"
    ac.create_database(warehouse_db)
    warehouse_conn = {"conn_type": "postgres", "host": ac.PG_HOST, "port": ac.PG_PORT,
                      "login": ac.PG_USER, "schema": warehouse_db}
    cluster = ac.AirflowCluster(
        work_dir=root / "cluster", dags_folder=REPO / "dags", executor="LocalExecutor",
        extra_env={
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__PARALLELISM": "3",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "RECEIPT_SOURCE": str(root / "incoming"),
            "RECEIPT_MODEL_CACHE": str(root / "models"),
            "RECEIPT_STAGING_DIR": str(root / "staging"),
            "RECEIPT_DATA_DOCS_DIR": "off",
            "RECEIPT_BATCHES_PER_TASK": "1",
            "RECEIPT_TASK_RETRIES": "0",  # a broken run fails now, not after retry delays
            "AIRFLOW_CONN_RECEIPTS_WAREHOUSE": json.dumps(warehouse_conn),
        })
    try:
        with cluster:
            cluster.airflow("db", "migrate")
            cluster.airflow("pools", "import", str(REPO / "deploy" / "pools.json"))
            cluster.airflow("variables", "set", "receipts_config", json.dumps({"model": EXTRACTOR}))
            cluster.start("api-server", "api-server", "--port", str(cluster.api_port), "--workers", "1")
            cluster.start("scheduler", "scheduler")
            cluster.start("dag-processor", "dag-processor")
            cluster.wait_http_ok(f"http://127.0.0.1:{cluster.api_port}/api/v2/monitor/health",
                                 STARTUP_TIMEOUT_S)
            cluster.wait_for("receipts_daily to be parsed", lambda: cluster.metadata(
                "SELECT 1 FROM serialized_dag WHERE dag_id = 'receipts_daily'"), STARTUP_TIMEOUT_S)
            yield Deployment(root, warehouse_db, cluster)
            assert cluster.stop_all() == []
    finally:
        ac.drop_database(warehouse_db)
        shutil.rmtree(root / "cluster", ignore_errors=True)


def test_backfill_reprocess_and_api_clear_all_succeed_and_change_nothing(deployment):
    d = deployment
    d.put(DAYS[0], "a.jpg", 101)
    d.put(DAYS[1], "b.jpg", 102)
    d.put(DAYS[2], "c.jpg", 103)
    d.put(DAYS[2], "d.jpg", 104)
    backfill = ["backfill", "create", "--dag-id", "receipts_daily",
                "--from-date", DAYS[0].isoformat(), "--to-date", DAYS[-1].isoformat()]

    d.cluster.airflow(*backfill)
    d.wait_backfills_done()
    run_ids = [r for r, _, _ in d.runs("run_type = 'backfill'")]
    assert len(run_ids) == 3, d.runs()
    states = d.wait_runs_done(run_ids, "the first backfill")
    assert states == ["success"] * 3, d.failure_report(run_ids)
    first = d.rows()
    assert len(first["receipts"]) + len(first["quarantine"]) == 4

    # The operator redoes the days; a late receipt arrived on day 3 meanwhile, so day 3's
    # new mapping has one batch where the last try had two.
    d.put(DAYS[2], "e.jpg", 105)
    d.cluster.airflow(*backfill, "--reprocess-behavior", "completed")
    d.wait_backfills_done()
    states = d.wait_runs_done(run_ids, "the reprocessing backfill")
    assert states == ["success"] * 3, d.failure_report(run_ids)
    tries = {task: n for task, index, _, n in d.task_states(run_ids[2]) if task == "validate_and_load"}
    assert tries == {"validate_and_load": 2}  # it did run again
    second = d.rows()
    for table, rows in first.items():  # what was loaded before is untouched, row for row
        assert set(rows) <= set(second[table]), table
    added = len(second["receipts"]) + len(second["quarantine"]) - 4
    assert added == 1  # the late receipt, once

    # Clearing a run from the REST API (what the UI's "Clear" does).
    d.cluster.api("POST", f"/api/v2/dags/receipts_daily/dagRuns/{run_ids[2]}/clear",
                  {"dry_run": False})
    d.cluster.wait_for("the cleared run to start", lambda: d.cluster.metadata(
        "SELECT 1 FROM task_instance WHERE run_id = %s AND task_id = 'validate_and_load' "
        "AND try_number = 3", (run_ids[2],)), RUN_TIMEOUT_S)
    states = d.wait_runs_done([run_ids[2]], "the cleared run")
    assert states == ["success"], d.failure_report(run_ids[2:])
    assert d.rows() == second

    ids = d.warehouse("SELECT receipt_id FROM receipts UNION ALL SELECT receipt_id FROM quarantine")
    assert len(ids) == len(set(ids)) == 5
    counts = {run_id: c for run_id, c in d.warehouse("SELECT run_id, counts FROM runs")}
    assert counts[run_ids[2]]["discovered"] == 0  # the last try found nothing new
    assert set(counts) == set(run_ids)
    loads = d.cluster.metadata(
        "SELECT run_id, try_number, state FROM task_instance WHERE task_id = 'validate_and_load' "
        "AND run_id = ANY(%s) ORDER BY run_id", (run_ids,))
    print("reprocess figure:", {"runs": len(run_ids), "validate_and_load (run, try, state)": loads,
                                "rows_first_backfill": sum(map(len, first.values())),
                                "rows_kept_identical": sum(len(set(first[t]) & set(second[t])) for t in first),
                                "receipt_rows_at_end": len(ids), "duplicates": len(ids) - len(set(ids))})


def test_two_overlapping_runs_of_one_day_extract_each_receipt_once(deployment):
    import psycopg2

    d = deployment
    d.put(OVERLAP_DAY, "x.jpg", 201)
    d.put(OVERLAP_DAY, "y.jpg", 202)
    interval = {"data_interval_start": _midnight(OVERLAP_DAY),
                "data_interval_end": _midnight(OVERLAP_DAY + dt.timedelta(days=1))}
    gate = psycopg2.connect(host=ac.PG_HOST, port=ac.PG_PORT, user=ac.PG_USER, dbname=d.warehouse_db)
    try:
        with gate.cursor() as cur:  # held until the end of the block: run A's load waits on it
            cur.execute("LOCK TABLE receipt_line_items IN ACCESS EXCLUSIVE MODE")
        d.cluster.api("POST", "/api/v2/dags/receipts_daily/dagRuns", {
            "dag_run_id": "overlap_a", "logical_date": _midnight(OVERLAP_DAY), **interval})
        d.cluster.wait_for("run A to wait at its load", lambda: d.warehouse(
            "SELECT 1 FROM pg_locks WHERE NOT granted "
            "AND relation = 'receipt_line_items'::regclass"), RUN_TIMEOUT_S)
        # Run B: same partition (a manual trigger beside the scheduled run).
        d.cluster.api("POST", "/api/v2/dags/receipts_daily/dagRuns", {
            "dag_run_id": "overlap_b", "logical_date": _midnight(OVERLAP_DAY).replace("00:00:00", "00:00:01"),
            **interval})
        assert d.wait_runs_done(["overlap_b"], "run B") == ["success"], d.failure_report(["overlap_b"])
        assert d.cluster.metadata("SELECT state FROM dag_run WHERE run_id = 'overlap_a'") == [("running",)]
    finally:
        gate.rollback()
        gate.close()
    assert d.wait_runs_done(["overlap_a"], "run A") == ["success"], d.failure_report(["overlap_a"])

    extracted = {run_id: [t for t in d.task_states(run_id) if t[0] == "extract" and t[2] == "success"]
                 for run_id in ("overlap_a", "overlap_b")}
    assert len(extracted["overlap_a"]) == 2 and extracted["overlap_b"] == [], extracted
    summary_b = d.warehouse("SELECT summary FROM runs WHERE run_id = 'overlap_b'")[0][0]
    assert summary_b["discovery"]["claimed_by_other_run"] == 2
    rows = d.warehouse("SELECT receipt_id, run_id FROM receipts WHERE source LIKE %s "
                       "UNION ALL SELECT receipt_id, run_id FROM quarantine WHERE source LIKE %s",
                       (f"%dt={OVERLAP_DAY}%", f"%dt={OVERLAP_DAY}%"))
    assert len(rows) == 2 and {r[1] for r in rows} == {"overlap_a"}, rows
    assert d.warehouse("SELECT count(*) FROM extraction_claims") == [(0,)]  # released by the load
    print("overlap figure:", {"receipts": 2, "extracted_by_a": len(extracted["overlap_a"]),
                              "extracted_by_b": len(extracted["overlap_b"]),
                              "claimed_by_other_run_in_b": summary_b["discovery"]["claimed_by_other_run"],
                              "rows": len(rows)})


def test_an_extract_task_killed_with_sigkill_resumes_from_its_staged_model_batches(deployment):
    """The task process of a running ``extract`` (3 receipts = 3 model batches of 1) is
    killed with SIGKILL once its first model batch is staged; the run fails, an operator
    clears it, and the new try extracts only what was not staged."""
    import signal

    d = deployment
    day = dt.date(2026, 3, 5)
    for i, seed in enumerate((301, 302, 303)):
        d.put(day, f"k{i}.jpg", seed)
    chunks = d.root / "staging" / "receipts_daily" / "killed" / "chunks"
    d.cluster.airflow("variables", "set", "receipts_config",
                      json.dumps({"model": EXTRACTOR, "batches_per_task": 3}))
    try:
        d.cluster.api("POST", "/api/v2/dags/receipts_daily/dagRuns", {
            "dag_run_id": "killed", "logical_date": _midnight(day),
            "data_interval_start": _midnight(day),
            "data_interval_end": _midnight(day + dt.timedelta(days=1))})
        d.cluster.wait_for("a staged model batch", lambda: list(chunks.glob("*.jsonl")),
                           RUN_TIMEOUT_S, interval=0.1)
        ((pid,),) = d.cluster.metadata("SELECT pid FROM task_instance WHERE run_id = 'killed' "
                                       "AND task_id = 'extract' AND state = 'running'")
        os.kill(pid, signal.SIGKILL)
        staged_at_kill = len(list(chunks.glob("*.jsonl")))
        assert 1 <= staged_at_kill < 3
        assert d.wait_runs_done(["killed"], "the killed run") == ["failed"]

        d.cluster.api("POST", "/api/v2/dags/receipts_daily/dagRuns/killed/clear", {"dry_run": False})
        d.cluster.wait_for("the cleared run to start", lambda: d.cluster.metadata(
            "SELECT 1 FROM task_instance WHERE run_id = 'killed' AND task_id = 'extract' "
            "AND try_number = 2"), RUN_TIMEOUT_S)
        assert d.wait_runs_done(["killed"], "the cleared run") == ["success"], d.failure_report(["killed"])
    finally:
        d.cluster.airflow("variables", "set", "receipts_config", json.dumps({"model": EXTRACTOR}))

    ((value,),) = d.cluster.metadata("SELECT value FROM xcom WHERE run_id = 'killed' "
                                     "AND task_id = 'extract' AND key = 'return_value'")
    staged = json.loads(value) if isinstance(value, str) else value
    assert (staged["resumed"], staged["extracted"]) == (staged_at_kill, 3 - staged_at_kill)
    rows = d.warehouse("SELECT receipt_id, run_id FROM receipts WHERE source LIKE %s "
                       "UNION ALL SELECT receipt_id, run_id FROM quarantine WHERE source LIKE %s",
                       (f"%dt={day}%", f"%dt={day}%"))
    assert len(rows) == len({r[0] for r in rows}) == 3 and {r[1] for r in rows} == {"killed"}
    print("task sigkill figure:", {"task_batch": 3, "model_batch": 1, "staged_at_kill": staged_at_kill,
                                   "re_extracted": staged["extracted"], "rows": len(rows)})
