"""The run deadline (Airflow 3.3 ``DeadlineAlert``) and the extract task's guard rails, on the
real DAG object, and Airflow's own deadline machinery exercised in-process: the DAG is
serialized to the metadata DB, a scheduled run is created (Airflow evaluates the custom
reference and writes the ``deadline`` row), the deadline is handled as missed the way the
scheduler's loop does (``Deadline.handle_miss``), and the queued callback is executed the
way the executor's callback runner does (``callback_supervisor.execute_callback``). The
scheduler loop and the executor themselves do not run here."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import structlog
from receipts_dag_helpers import REPO

UTC = dt.UTC


@pytest.fixture(scope="module", autouse=True)
def fresh_metadata_db(airflow_db):
    """An empty metadata DB for this module: an earlier dag.test() of the suite leaves a
    serialized receipts_daily without a deadline, and Airflow keeps a version it wrote
    moments ago instead of the one these tests sync (so no deadline row would be made)."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.resetdb()
    Pool.create_or_update_pool("gpu", slots=4, description="extract tasks", include_deferred=False)


@pytest.fixture
def deadline_dag(airflow_db, monkeypatch):
    """receipts_daily parsed with a 6-hour deadline (the DAG test suite parses it with
    deadlines off, because dag.test() of Airflow 3.3.2 cannot run a DAG that has one)."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RECEIPT_DEADLINE_HOURS", "6")
    monkeypatch.setenv("RECEIPT_EXTRACT_TIMEOUT_MINUTES", "45")
    bag = DagBag(dag_folder=str(REPO / "dags" / "receipts.py"))
    assert not bag.import_errors, bag.import_errors
    return bag


def test_the_dag_carries_its_deadline_and_extract_guard_rails(deadline_dag):
    from airflow.sdk import SyncCallback
    from receipts_deadline import DailyRunIntervalEnd

    from extractor.spec import PRESETS

    dag = deadline_dag.get_dag("receipts_daily")
    [alert] = dag.deadline
    assert isinstance(alert.reference, DailyRunIntervalEnd)
    assert alert.interval == dt.timedelta(hours=6)
    assert isinstance(alert.callback, SyncCallback)
    assert alert.callback.path == "receipts_notifiers.on_deadline_missed"
    extract = dag.get_task("extract")
    assert extract.execution_timeout == dt.timedelta(minutes=45)
    assert extract.map_index_template == (
        "batch {{ ti.map_index }}: {{ task.op_kwargs['batch'] | length }} receipts")
    assert dag.params.get_param("extractor").schema["examples"] == sorted(PRESETS)
    assert dag.default_args["on_failure_callback"].__name__ == "on_task_failure"


def test_without_the_setting_there_is_no_deadline(receipts_dag):
    assert not receipts_dag.deadline


def _create_run(sdag, run_type, logical: dt.datetime, session):
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType

    return sdag.create_dagrun(
        run_id=f"{run_type.value}__{logical.isoformat()}", logical_date=logical,
        data_interval=(logical, logical + dt.timedelta(days=1)), run_after=logical + dt.timedelta(days=1),
        run_type=run_type, triggered_by=DagRunTriggeredByType.TEST, state=DagRunState.RUNNING,
        session=session)


def test_a_late_scheduled_run_alerts_through_airflows_deadline_machinery(deadline_dag, pipeline, monkeypatch):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.dagbag import DBDagBag
    from airflow.models.deadline import Deadline
    from airflow.sdk.execution_time.callback_supervisor import execute_callback
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType
    from sqlalchemy import select

    monkeypatch.setenv("RECEIPT_DEADLINE_HOURS", "6")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.test/")
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(deadline_dag, "dags-folder", None)
    day = dt.datetime(2031, 5, 1, tzinfo=UTC)  # days no other test uses
    with create_session() as session:
        sdag = DBDagBag().get_latest_version_of_dag("receipts_daily", session=session)
        scheduled = _create_run(sdag, DagRunType.SCHEDULED, day, session)
        manual = _create_run(sdag, DagRunType.MANUAL, day + dt.timedelta(days=1), session)
        backfill = _create_run(sdag, DagRunType.BACKFILL_JOB, day + dt.timedelta(days=2), session)
        session.flush()
        deadlines = {d.dagrun_id: d for d in session.scalars(select(Deadline).where(
            Deadline.dagrun_id.in_([scheduled.id, manual.id, backfill.id])))}
        # only the scheduled run has one: its interval end + 6 h
        assert list(deadlines) == [scheduled.id]
        deadline = deadlines[scheduled.id]
        assert deadline.deadline_time == day + dt.timedelta(days=1, hours=6)
        deadline.handle_miss(session)  # what the scheduler does once deadline_time has passed
        session.flush()
        assert deadline.missed and deadline.callback.state == "pending"
        data = dict(deadline.callback.data)
        run_id = scheduled.run_id

    ok, error = execute_callback(data["path"], data["kwargs"], dag_rel_path="receipts.py",
                                 bundle_path=str(REPO / "dags"), log=structlog.get_logger("callback"))
    assert (ok, error) == (True, None)
    [(level, message, details)] = pipeline.fetch("SELECT level, message, details FROM alerts")
    assert level == "error" and json.loads(details)["kind"] == "deadline"
    assert message.splitlines()[0] == (
        f"receipts_daily run {run_id} missed its deadline: not finished by 2031-05-02T06:00:00Z "
        "(6:00:00 after its data interval ended at 2031-05-02T00:00:00Z); state running")
    assert message.splitlines()[-1].startswith("  run: https://airflow.example.test/dags/receipts_daily/runs/scheduled__")
    assert pipeline.alerts_seen == [(message, json.loads(details))]


def test_a_run_that_finishes_in_time_has_its_deadline_pruned(deadline_dag, airflow_db, monkeypatch):
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.deadline import Deadline
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType
    from sqlalchemy import select

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(deadline_dag, "dags-folder", None)
    day = dt.datetime(2031, 6, 1, tzinfo=UTC)
    with create_session() as session:
        sdag = DBDagBag().get_latest_version_of_dag("receipts_daily", session=session)
        run = _create_run(sdag, DagRunType.SCHEDULED, day, session)
        session.flush()
        run.end_date = day + dt.timedelta(days=1, hours=2)  # finished 2 h after its day: in time
        session.flush()
        assert Deadline.prune_deadlines(session=session, conditions={DagRun.id: run.id}) == 1
        assert session.scalars(select(Deadline).where(Deadline.dagrun_id == run.id)).all() == []
