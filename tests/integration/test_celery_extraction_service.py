"""``receipts_daily`` on a real CeleryExecutor deployment whose extract tasks are clients of
the resident extraction service (``python -m extractor serve``), as on a GPU host.

The deployment is the one of test_celery_distributed.py (local processes: PostgreSQL
metadata, Redis broker, api-server, scheduler, dag-processor, a ``default`` and a ``gpu``
Celery worker, started with ``deploy/airflow-init.sh``), plus the service beside the gpu
worker with a tiny random-weight Mllama (``extractor.testing.tiny_models``; no GPU here, so
the service runs it on the CPU: what is under test is the serving path, not CUDA). The
gpu worker gets ``RECEIPT_EXTRACTION_SERVICE_URL``, as docker-compose.yaml sets it.

Run 1, six receipts, three mapped extract tasks on the one gpu worker: every task reports
a model load time of ~0 and the service's load counter says the model was loaded once for
the whole run. Run 2, six new receipts: the service is SIGKILLed while it holds a task's
batch, then restarted; the task fails with a clear reason, its retry (and those of tasks
that found the service down) finishes, and the warehouse holds each of the twelve
receipts exactly once: 0 lost, 0 duplicated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import airflow_cluster as ac
from test_celery_distributed import PhaseTimer, _run_init, _services_reachable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DAYS = (dt.date(2026, 3, 1), dt.date(2026, 3, 2))
GPU_QUEUE = "gpu"
STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 420
# Long enough outputs that a batch takes seconds on this CPU: the kill lands inside one.
SPEC = {"backend": "hf", "model_id": "tiny/mllama", "revision": "test", "dtype": "float32",
        "batch_size": 2, "max_new_tokens": 200, "device_map": None, "grammar": "none"}


def _interval(day: dt.date) -> dict[str, str]:
    start = f"{day.isoformat()}T00:00:00+00:00"
    end = f"{(day + dt.timedelta(days=1)).isoformat()}T00:00:00+00:00"
    return {"logical_date": start, "data_interval_start": start, "data_interval_end": end}


def _partition(root: Path, day: dt.date, seeds: range) -> set[str]:
    from extractor.testing.synthetic import render_receipt

    folder = root / "incoming" / f"dt={day.isoformat()}"
    folder.mkdir(parents=True)
    ids = set()
    for seed in seeds:
        data = render_receipt(seed)[0]
        (folder / f"r{seed}.jpg").write_bytes(data)
        ids.add(hashlib.sha256(data).hexdigest())
    return ids


class Service:
    """``python -m extractor serve`` as a managed process of the cluster (restartable)."""

    def __init__(self, cluster: ac.AirflowCluster, spec: dict, port: int):
        self.cluster, self.spec, self.port = cluster, spec, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: ac.ManagedProcess | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.process = self.cluster.spawn(f"extraction-service-{self.starts}", [
            sys.executable, "-m", "extractor", "serve", "--model", json.dumps(self.spec),
            "--port", str(self.port)])

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return json.load(response)
        except OSError:
            return None

    def wait_ready(self) -> dict:
        return self.cluster.wait_for("the extraction service to be ready", lambda: (
            h if (h := self.health()) and h["status"] == "ready" else None), STARTUP_TIMEOUT_S, 0.5)

    def kill_while_busy(self, timeout: float) -> dict:
        """SIGKILL the service (its whole process group) once it holds receipts of a task."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health()
            if health and health["queued_receipts"] + health["in_flight_receipts"] > 0:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.popen.wait(10)
                self.cluster.processes.remove(self.process)  # gone on purpose, not "exited early"
                return health
            time.sleep(0.02)
        raise TimeoutError("the service never held a batch to be killed in")


@pytest.fixture
def warehouse_db():
    name = f"receipts_wh_{os.urandom(5).hex()}"
    ac.create_database(name)
    try:
        yield name
    finally:
        ac.drop_database(name)


def _extract_rows(cluster: ac.AirflowCluster, run_id: str) -> list[tuple]:
    return cluster.metadata(
        "SELECT map_index, state, queue, hostname, try_number FROM task_instance WHERE dag_id = "
        "'receipts_daily' AND run_id = %s AND task_id = 'extract' ORDER BY map_index", (run_id,))


def _extract_returns(cluster: ac.AirflowCluster, run_id: str) -> list[dict]:
    rows = cluster.metadata(
        "SELECT map_index, value FROM xcom WHERE dag_id = 'receipts_daily' AND run_id = %s "
        "AND task_id = 'extract' AND key = 'return_value' ORDER BY map_index", (run_id,))
    return [v if isinstance(v, dict) else json.loads(v) for _, v in rows]


def _trigger_and_wait(cluster: ac.AirflowCluster, run_id: str, day: dt.date, during=None) -> tuple:
    cluster.api("POST", "/api/v2/dags/receipts_daily/dagRuns", {"dag_run_id": run_id, **_interval(day)})
    seen = during() if during else None
    final = cluster.wait_for(f"run {run_id} to finish", lambda: [
        state for (state,) in cluster.metadata("SELECT state FROM dag_run WHERE run_id = %s", (run_id,))
        if state in ("success", "failed")], RUN_TIMEOUT_S)
    return final, seen


def test_extract_tasks_share_one_resident_model_and_survive_its_kill(tmp_path, warehouse_db):
    if reason := _services_reachable():
        pytest.skip(reason)
    from extractor.spec import ExtractorSpec
    from extractor.testing.tiny_models import build_tiny_model

    spec = {**SPEC, "source": str(build_tiny_model("mllama", tmp_path / "models" / "tiny-mllama"))}
    version = ExtractorSpec(**spec).version
    expected = [_partition(tmp_path, DAYS[0], range(6)), _partition(tmp_path, DAYS[1], range(6, 12))]
    warehouse_conn = {"conn_type": "postgres", "host": ac.PG_HOST, "port": ac.PG_PORT,
                      "login": ac.PG_USER, "schema": warehouse_db}
    port = ac.free_port()
    cluster = ac.AirflowCluster(work_dir=tmp_path / "cluster", dags_folder=REPO / "dags", extra_env={
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RECEIPT_GPU_QUEUE": GPU_QUEUE,
        "RECEIPT_SOURCE": str(tmp_path / "incoming"),
        "RECEIPT_MODEL_CACHE": str(tmp_path / "efs" / "models"),
        "RECEIPT_STAGING_DIR": str(tmp_path / "efs" / "pipeline" / "staging"),
        "RECEIPT_DATA_DOCS_DIR": "off",
        "RECEIPT_BATCHES_PER_TASK": "1",  # a task per model batch of 2: three tasks per run
        "RECEIPT_TASK_RETRIES": "6",  # covers the service's restart (imports torch: seconds)
        "RECEIPT_TASK_RETRY_DELAY_S": "5",
        "RECEIPT_EXTRACTION_SERVICE_URL": f"http://127.0.0.1:{port}",
        "RECEIPT_EXTRACTION_SERVICE_TIMEOUT_S": "120",
        # The one configuration Variable (an environment Variable wins over the metastore's,
        # which airflow-init fills from deploy/variables.json). Random weights: every receipt
        # is quarantined as unparseable, which must not fail the run.
        "AIRFLOW_VAR_RECEIPTS_CONFIG": json.dumps({"model": spec, "thresholds": {
            "max_quarantine_rate_alert": 1.0, "max_quarantine_rate_fail": 1.0}}),
        "AIRFLOW_CONN_RECEIPTS_WAREHOUSE": json.dumps(warehouse_conn),
    })
    phases = PhaseTimer()
    with cluster:
        _run_init(cluster)
        service = Service(cluster, spec, port)
        service.start()
        cluster.start("api-server", "api-server", "--port", str(cluster.api_port), "--workers", "1")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        cluster.start_worker("worker-default", "default", concurrency=2)
        cluster.start_worker("worker-gpu", GPU_QUEUE, concurrency=1)
        loaded = service.wait_ready()
        cluster.wait_http_ok(f"http://127.0.0.1:{cluster.api_port}/api/v2/monitor/health", STARTUP_TIMEOUT_S)
        cluster.wait_for("receipts_daily to be parsed", lambda: cluster.metadata(
            "SELECT 1 FROM serialized_dag WHERE dag_id = 'receipts_daily'"), STARTUP_TIMEOUT_S)
        phases.mark("started")

        first, _ = _trigger_and_wait(cluster, "it_service_run1", DAYS[0])
        phases.mark("run 1")
        after_first = service.health()
        tasks_first = _extract_rows(cluster, "it_service_run1")
        returns_first = _extract_returns(cluster, "it_service_run1")

        killed_pid = service.process.pid
        second, busy = _trigger_and_wait(cluster, "it_service_run2", DAYS[1], during=lambda: (
            service.kill_while_busy(RUN_TIMEOUT_S), service.start(), service.wait_ready())[0])
        phases.mark("run 2 (kill + restart)")
        after_restart = service.health()
        tasks_second = _extract_rows(cluster, "it_service_run2")
        returns_second = _extract_returns(cluster, "it_service_run2")
        task_logs = "\n".join(p.read_text(errors="replace") for p in
                              (cluster.home / "logs").rglob("*.log") if "task_id=extract" in str(p))
        diagnostics = "" if first == second == ["success"] else cluster.diagnostics()
    print("phases (s):", phases)

    assert first == ["success"], f"{tasks_first}\n{diagnostics}"
    assert loaded["loads"] == 1 and loaded["extractor_version"] == version
    assert len(tasks_first) == 3 and all(
        state == "success" and queue == GPU_QUEUE and host == "worker-gpu"
        for _, state, queue, host, _ in tasks_first), tasks_first
    assert after_first["loads"] == 1, "one model load for the whole run"
    assert after_first["receipts"] == 6
    assert [r["model_load_s"] for r in returns_first] == [0.0, 0.0, 0.0], returns_first

    assert second == ["success"], f"{tasks_second}\n{diagnostics}"
    assert busy["pid"] == killed_pid and after_restart["pid"] != killed_pid
    assert max(t[4] for t in tasks_second) > 1, f"no extract task needed a retry: {tasks_second}"
    assert "dropped the connection during POST /extract" in task_logs or "is unreachable" in task_logs
    assert after_restart["loads"] == 1 and sum(r["receipts"] for r in returns_second) == 6

    rows = ac.query(warehouse_db, "SELECT receipt_id, extractor_version FROM receipts UNION ALL "
                                  "SELECT receipt_id, extractor_version FROM quarantine")
    assert sorted(r[0] for r in rows) == sorted(expected[0] | expected[1]), "0 lost, 0 duplicated"
    assert {r[1] for r in rows} == {version}
    reasons = {r[0] for r in ac.query(warehouse_db, "SELECT split_part(reason, ':', 1) FROM quarantine")}
    assert reasons <= {"unparseable output", "invalid fields"}, reasons


@pytest.fixture(autouse=True)
def _no_leftover_airflow_home(tmp_path):
    yield
    shutil.rmtree(tmp_path / "cluster", ignore_errors=True)
