"""Real Airflow for the DAG tests: a throwaway SQLite metadata DB, this repo's dags/ and
plugins/, the ``gpu`` pool, and one isolated pipeline (source folder, DuckDB warehouse,
staging, Data Docs, model cache) per test, configured the way production is: through
Airflow Variables (``AIRFLOW_VAR_*``) and the environment."""

from __future__ import annotations

import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Before anything imports airflow (the root conftest already chose a temporary AIRFLOW_HOME).
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["RECEIPT_TASK_RETRIES"] = "0"  # a failing test must fail now, not after retry delays
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))

if str(Path(__file__).parent) not in sys.path:  # the alert sink, importable by dotted path
    sys.path.insert(0, str(Path(__file__).parent))
import receipts_alert_sink  # noqa: E402

SAMPLES = REPO / "include" / "extractor" / "samples" / "receipts"


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate the metadata DB once per session and create the ``gpu`` pool."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.resetdb()
    Pool.create_or_update_pool("gpu", slots=4, description="extract tasks", include_deferred=False)
    return True


@pytest.fixture(scope="session")
def receipts_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("receipts_daily")


def logical_date_for(day: dt.date) -> dt.datetime:
    """``dag.test`` makes a manual run, whose data interval is the last complete day before
    its logical date: partition ``day`` is processed by a manual run at the next midnight
    (a scheduled or backfill run has logical date ``day`` itself)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


@dataclass
class Pipeline:
    """One isolated pipeline deployment inside ``tmp_path``."""

    root: Path
    dag: object
    warehouse_url: str
    alerts_seen: list = field(default_factory=list)

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    def put(self, day: dt.date, name: str, data: bytes) -> Path:
        path = self.incoming / f"dt={day.isoformat()}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def put_sample(self, day: dt.date, sample: str) -> Path:
        return self.put(day, f"{sample}.jpg", (SAMPLES / f"{sample}.jpg").read_bytes())

    def run(self, day: dt.date, conf: dict | None = None):
        # Always pass the param: in one process, Airflow's param processing writes a run's
        # conf into the DAG object's Param, so an override would leak into the next
        # dag.test() (a deployment parses the DAG afresh per task process).
        return self.dag.test(logical_date=logical_date_for(day),
                             run_conf={"extractor": None, **(conf or {})})

    def fetch(self, sql: str, params=()):
        from extractor.pipeline.warehouse import open_warehouse

        warehouse = open_warehouse(self.warehouse_url)
        try:
            return warehouse.fetch(sql, params)
        finally:
            warehouse.close()

    def task_states(self, dag_run) -> dict[str, str]:
        return {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): ti.state
                for ti in dag_run.get_task_instances()}


@pytest.fixture
def pipeline(receipts_dag, tmp_path, monkeypatch) -> Pipeline:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPT_EXTRACTOR", "ocr")
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_SOURCE", str(tmp_path / "incoming"))
    monkeypatch.setenv("RECEIPT_WAREHOUSE_URL", url)
    monkeypatch.setenv("RECEIPT_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("RECEIPT_DATA_DOCS_DIR", str(tmp_path / "data_docs"))
    monkeypatch.setenv("RECEIPT_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setenv("RECEIPT_ALERT_CALLBACKS", "receipts_alert_sink:record_alert")
    receipts_alert_sink.ALERTS.clear()
    return Pipeline(root=tmp_path, dag=receipts_dag, warehouse_url=url,
                    alerts_seen=receipts_alert_sink.ALERTS)


def synthetic_receipt(seed: int, **overrides) -> bytes:
    """A rendered receipt the OCR reader reads well (fields known), dated by the caller."""
    from extractor.synthetic import render_receipt

    data, _truth = render_receipt(seed, **overrides)
    return data


def table_state(pipeline: Pipeline) -> dict[str, list[tuple]]:
    """Warehouse content without per-run lineage (run ids and load times differ per run)."""
    return {
        "receipts": sorted(pipeline.fetch(
            "SELECT receipt_id, extractor_version, source, store_name, date, total FROM receipts")),
        "line_items": sorted(pipeline.fetch(
            "SELECT receipt_id, extractor_version, line_no, name, line_total FROM receipt_line_items")),
        "quarantine": sorted(pipeline.fetch(
            "SELECT receipt_id, extractor_version, source, stage, reason FROM quarantine")),
    }
