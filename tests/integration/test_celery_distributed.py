"""A real distributed Airflow 3.3 deployment on this machine, running ``receipts_daily``.

What production runs in containers runs here as local processes (tests/integration/
airflow_cluster.py): metadata in a fresh PostgreSQL database (127.0.0.1:5432, dropped
afterwards), Redis as the Celery broker (a dedicated db number, flushed afterwards), the
Celery result backend in PostgreSQL, and the components: api-server (execution API),
scheduler, dag-processor and two Celery workers, ``worker-default`` on queue ``default``
and ``worker-gpu`` on queue ``gpu``. The metadata is initialised by the deployment's own
``deploy/airflow-init.sh`` with the deployment's ``deploy/pools.json`` and
``deploy/variables.json`` (run twice, around an operator's switch of the model Variable,
which must survive the second run); connections come from ``AIRFLOW_CONN_*`` environment
variables as in docker-compose.yaml.

The run extracts two bundled sample receipts with the OCR backend (no GPU here: the
``gpu`` worker is an ordinary CPU process; what is under test is the routing, not CUDA)
into a PostgreSQL warehouse database (also created and dropped). The test asserts that the
extract tasks ran on the gpu worker and nothing else did, that the warehouse holds each
receipt exactly once under the OCR extractor version with the run's lineage row, and that
every process is gone afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import airflow_cluster as ac  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "include" / "extractor" / "samples" / "receipts"
SAMPLE_IDS = ("X51006466062", "X51005442341")
DAY = dt.date(2026, 3, 1)
# The run with logical date DAY processes partition DAY: data interval [DAY, DAY + 1).
INTERVAL_START = f"{DAY.isoformat()}T00:00:00+00:00"
INTERVAL_END = f"{(DAY + dt.timedelta(days=1)).isoformat()}T00:00:00+00:00"
RUN_ID = "it_celery_distributed"
GPU_QUEUE = "gpu"
# Budgets on a busy 2-core machine; a healthy run needs well under half of each.
STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 420


def _services_reachable() -> str | None:
    try:
        ac.query("postgres", "SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server to test against"
        return f"PostgreSQL at {ac.PG_HOST}:{ac.PG_PORT} unreachable: {exc}"
    try:
        import redis

        redis.Redis(host=ac.REDIS_HOST, port=ac.REDIS_PORT, db=ac.REDIS_DB).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {ac.REDIS_HOST}:{ac.REDIS_PORT} unreachable: {exc}"
    return None


class PhaseTimer:
    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.phases: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self.last, 1)
        self.last = now

    def __str__(self) -> str:
        return f"{self.phases} total={time.monotonic() - self.start:.1f}"


def _run_init(cluster: ac.AirflowCluster) -> None:
    init = subprocess.run(["bash", str(REPO / "deploy" / "airflow-init.sh")],
                          env=cluster.base_env(), cwd=cluster.work_dir, capture_output=True,
                          text=True, timeout=300)
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]


@pytest.fixture
def warehouse_db():
    name = f"receipts_wh_{os.urandom(5).hex()}"
    ac.create_database(name)
    try:
        yield name
    finally:
        ac.drop_database(name)


def _receipts_partition(root: Path) -> dict[str, str]:
    """Two sample receipts in the partition folder; receipt id (sha256) -> file name."""
    folder = root / "incoming" / f"dt={DAY.isoformat()}"
    folder.mkdir(parents=True)
    ids = {}
    for sample in SAMPLE_IDS:
        data = (SAMPLES / f"{sample}.jpg").read_bytes()
        (folder / f"{sample}.jpg").write_bytes(data)
        ids[hashlib.sha256(data).hexdigest()] = f"{sample}.jpg"
    return ids


def test_receipts_daily_on_celery_routes_extraction_to_the_gpu_worker(tmp_path, warehouse_db):
    if reason := _services_reachable():
        pytest.skip(reason)
    from extractor.spec import resolve_spec

    expected_ids = _receipts_partition(tmp_path)
    # One receipt per model batch and per extract task: two mapped extract tasks, so
    # "every extract task" means more than one.
    extractor = {"preset": "ocr", "batch_size": 1}
    version = resolve_spec(extractor).version

    warehouse_conn = {"conn_type": "postgres", "host": ac.PG_HOST, "port": ac.PG_PORT,
                      "login": ac.PG_USER, "schema": warehouse_db}
    cluster = ac.AirflowCluster(
        work_dir=tmp_path / "cluster", dags_folder=REPO / "dags", extra_env={
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "RECEIPT_GPU_QUEUE": GPU_QUEUE,
            "RECEIPT_SOURCE": str(tmp_path / "incoming"),
            "RECEIPT_MODEL_CACHE": str(tmp_path / "efs" / "models"),
            "RECEIPT_STAGING_DIR": str(tmp_path / "efs" / "pipeline" / "staging"),
            "RECEIPT_DATA_DOCS_DIR": str(tmp_path / "efs" / "pipeline" / "data_docs"),
            "RECEIPT_BATCHES_PER_TASK": "1",
            "RECEIPT_TASK_RETRIES": "0",  # a broken run fails now, not after retry delays
            "AIRFLOW_CONN_RECEIPTS_WAREHOUSE": json.dumps(warehouse_conn),
        })

    phases = PhaseTimer()
    with cluster:
        # Start-up exactly as airflow-init does it, with the deployment's own files
        # (deploy/variables.json names the production model) ...
        _run_init(cluster)
        pools = json.loads((REPO / "deploy" / "pools.json").read_text())
        assert cluster.metadata("SELECT slots FROM slot_pool WHERE pool = 'gpu'") == [
            (pools["gpu"]["slots"],)]
        # ... an operator switches the model (here to the OCR reader), and a restart of the
        # stack runs airflow-init again: the switch must survive it.
        switched = {**json.loads(cluster.variable("receipts_config")), "model": extractor}
        cluster.airflow("variables", "set", "receipts_config", json.dumps(switched))
        _run_init(cluster)
        assert json.loads(cluster.variable("receipts_config"))["model"] == extractor
        phases.mark("init twice + model switch")

        cluster.start("api-server", "api-server", "--port", str(cluster.api_port), "--workers", "1")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        cluster.start_worker("worker-default", "default", concurrency=2)
        cluster.start_worker("worker-gpu", GPU_QUEUE, concurrency=1)

        cluster.wait_http_ok(f"http://127.0.0.1:{cluster.api_port}/api/v2/monitor/health",
                             STARTUP_TIMEOUT_S)
        phases.mark("api-server healthy")
        cluster.wait_for("receipts_daily to be parsed", lambda: cluster.metadata(
            "SELECT 1 FROM serialized_dag WHERE dag_id = 'receipts_daily'"), STARTUP_TIMEOUT_S)
        phases.mark("DAG parsed")
        # Through the REST API with the partition's data interval: `airflow dags trigger -l`
        # infers a manual run's interval from the time of triggering, not from the date given.
        cluster.api("POST", "/api/v2/dags/receipts_daily/dagRuns", {
            "dag_run_id": RUN_ID, "logical_date": INTERVAL_START,
            "data_interval_start": INTERVAL_START, "data_interval_end": INTERVAL_END})

        final = cluster.wait_for("the run to finish", lambda: [
            state for (state,) in cluster.metadata(
                "SELECT state FROM dag_run WHERE run_id = %s", (RUN_ID,))
            if state in ("success", "failed")], RUN_TIMEOUT_S)
        phases.mark("run finished")
        tis = cluster.metadata(
            "SELECT task_id, map_index, state, queue, hostname FROM task_instance "
            "WHERE dag_id = 'receipts_daily' AND run_id = %s ORDER BY task_id, map_index", (RUN_ID,))
        diagnostics = "" if final == ["success"] else cluster.diagnostics()

        forced = cluster.stop_all()
        phases.mark("all stopped")
        strays = cluster.stray_processes()
        exit_codes = {p.name: p.popen.returncode for p in cluster.processes}

    print("phases (s):", phases)  # shown with -s or -rP; the docs quote these
    assert final == ["success"], f"{tis}\n{diagnostics}"

    extract = [t for t in tis if t[0] == "extract"]
    others = [t for t in tis if t[0] != "extract"]
    assert len(extract) == 2, tis
    assert all(state == "success" and queue == GPU_QUEUE and host == "worker-gpu"
               for _, _, state, queue, host in extract), extract
    ran_elsewhere = [t for t in others if t[2] == "success"]
    assert {t[0] for t in ran_elsewhere} >= {"resolve_extractor", "discover_new_receipts",
                                             "validate_and_load", "report"}, tis
    assert all(queue != GPU_QUEUE and host == "worker-default"
               for _, _, _, queue, host in ran_elsewhere), others

    # Every process was stopped by PID and nothing of the deployment is left running.
    assert all(code is not None for code in exit_codes.values()), exit_codes
    assert strays == [], f"processes left running: {strays}"
    assert forced == [], f"needed SIGKILL: {forced}"

    loaded = ac.query(warehouse_db, "SELECT receipt_id, extractor_version FROM receipts")
    quarantined = ac.query(warehouse_db, "SELECT receipt_id, extractor_version FROM quarantine")
    ids = [r[0] for r in loaded + quarantined]
    assert sorted(ids) == sorted(expected_ids), (loaded, quarantined)
    assert {r[1] for r in loaded + quarantined} == {version}
    runs = ac.query(warehouse_db, "SELECT run_id, extractor_version FROM runs")
    assert runs == [(RUN_ID, version)]


@pytest.fixture(autouse=True)
def _no_leftover_airflow_home(tmp_path):
    yield
    # Task logs and the throwaway AIRFLOW_HOME can be large; the databases are dropped above.
    shutil.rmtree(tmp_path / "cluster", ignore_errors=True)
