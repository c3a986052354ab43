"""Real Airflow for the DAG tests: a throwaway SQLite metadata DB, this repo's dags/ and
plugins/, the ``gpu`` pool, and one isolated pipeline (source folder, DuckDB warehouse,
staging, Data Docs, model cache) per test, configured the way production is: through
Airflow Variables (``AIRFLOW_VAR_*``) and the environment."""

from __future__ import annotations

import os
import sys
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
from receipts_dag_helpers import Pipeline  # noqa: E402


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
