"""Every DAG in dags/ imports cleanly, and parsing stays light (no torch, transformers or
great_expectations at parse time: DAG files are parsed every few seconds by the scheduler)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "great_expectations", "rapidocr", "onnxruntime", "duckdb",
         "psycopg2", "boto3", "PIL")


def test_every_dag_imports_without_errors(receipts_dag):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= {"receipts_daily"}
    for dag_id in bag.dag_ids:
        assert bag.get_dag(dag_id).doc_md, f"{dag_id} has no doc_md"


def test_parsing_the_dags_imports_nothing_heavy(tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        queue = bag.dags["receipts_daily"].get_task("extract").queue
        print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                          "dags": sorted(bag.dag_ids), "heavy": heavy, "queue": queue}}))
    """)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "RECEIPT_GPU_QUEUE": "gpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert "receipts_daily" in result["dags"]
    assert result["heavy"] == [], f"parsing the DAGs imported {result['heavy']}"
    assert result["queue"] == "gpu"  # production routes extraction to the GPU workers' queue


def test_receipts_daily_shape(receipts_dag):
    dag = receipts_dag
    assert set(dag.task_ids) == {"resolve_extractor", "ensure_model", "discover_new_receipts",
                                 "extract", "validate_and_load", "reconcile", "report", "prune_staging",
                                 "quality_report", "quality_gate"}
    extract = dag.get_task("extract")
    assert extract.pool == "gpu"
    assert extract.queue == os.environ.get("RECEIPT_GPU_QUEUE", "default")
    report = dag.get_task("report")
    assert [a.uri for a in report.outlets] == ["receipts_warehouse://receipts"]
    assert dag.get_task("prune_staging").upstream_task_ids == {"report"}  # only a finished run prunes
    quality = dag.get_task("quality_report")  # redrawn after every run, failed ones included
    assert quality.upstream_task_ids == {"report"} and quality.trigger_rule == "all_done"
    assert dag.params["extractor"] is None
    assert dag.max_active_runs >= 1 and not dag.catchup
    assert dag.on_failure_callback, "a failed run must alert"


def test_scheduled_and_backfill_runs_read_the_partition_of_their_logical_date(receipts_dag):
    """`airflow backfill create --from-date 2026-03-01 --to-date 2026-03-03` plans one run per
    partition dt=2026-03-01..03 (Airflow's own planner), each run reading its own day."""
    import datetime as dt

    from airflow.models.backfill import _get_info_list
    from airflow.serialization.serialized_objects import DagSerialization

    from extractor.pipeline.sources.discovery import partition_days

    utc = dt.UTC
    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(receipts_dag))
    plan = _get_info_list(from_date=dt.datetime(2026, 3, 1, tzinfo=utc),
                          to_date=dt.datetime(2026, 3, 3, tzinfo=utc), reverse=False, dag=serialized)
    assert [(i.logical_date.date(), partition_days(*i.data_interval)) for i in plan] == [
        (dt.date(2026, 3, d), [dt.date(2026, 3, d)]) for d in (1, 2, 3)]


@pytest.mark.parametrize("hour", [0, 7])
def test_a_manual_run_reads_the_last_complete_day(receipts_dag, hour):
    import datetime as dt

    from airflow.serialization.encoders import coerce_to_core_timetable

    from extractor.pipeline.sources.discovery import partition_days

    run_after = dt.datetime(2026, 3, 2, hour, tzinfo=dt.UTC)
    interval = coerce_to_core_timetable(receipts_dag.timetable).infer_manual_data_interval(
        run_after=run_after)
    assert partition_days(interval.start, interval.end) == [dt.date(2026, 3, 1)]
