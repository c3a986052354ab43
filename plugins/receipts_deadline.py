"""The deadline of a ``receipts_daily`` run: the end of its data interval (plus an allowance).

Airflow 3.3's built-in deadline references are the run's logical date, its queue time, a
fixed time and the average runtime; "N hours after the day's data interval ends" is none of
them for every run type, so this is a custom reference, registered by the plugin below
(the scheduler can only evaluate references a plugin registers). It applies to
*scheduled* runs only: a backfill or a manual run of an old day has an interval that
ended long ago and would miss its deadline the moment it was created; for those the
reference evaluates to None and Airflow creates no deadline.

The DAG wires it as ``DeadlineAlert(reference=DailyRunIntervalEnd(), interval=<allowance>,
callback=SyncCallback(receipts_notifiers.on_deadline_missed))``; when a run has not
finished by then, the scheduler queues the callback (the executor runs it) and it sends
the alert.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseDeadlineReference


class DailyRunIntervalEnd(BaseDeadlineReference):
    """The ``data_interval_end`` of a scheduled DAG run (None for other run types)."""

    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session, dag_id: str, run_id: str, **kwargs):
        from airflow.models import DagRun
        from sqlalchemy import select

        row = session.execute(select(DagRun.run_type, DagRun.data_interval_end).where(
            DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one_or_none()
        if row is None or str(row.run_type) not in ("scheduled", "DagRunType.SCHEDULED"):
            return None
        return row.data_interval_end


class ReceiptsDeadlinePlugin(AirflowPlugin):
    name = "receipts_deadline"
    deadline_references = [DailyRunIntervalEnd]
