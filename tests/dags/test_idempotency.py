"""Re-running a day and backfilling give the same warehouse rows as the daily runs, with no
duplicates (real ``dag.test()`` runs, OCR backend, DuckDB)."""

from __future__ import annotations

import datetime as dt

import pytest
from receipts_dag_helpers import Pipeline, synthetic_receipt, table_state

DAYS = [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)]


def _fill(pipeline: Pipeline) -> None:
    for i, day in enumerate(DAYS):
        pipeline.put(day, f"r{i}.jpg", synthetic_receipt(10 + i, date=day.isoformat()))


def test_the_same_day_twice_adds_nothing(pipeline):
    pipeline.put(DAYS[0], "a.jpg", synthetic_receipt(1, date="2026-02-27"))
    began = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    first = pipeline.run(DAYS[0])
    ended = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert first.state == "success", pipeline.task_states(first)
    # wall-clock times, not the logical date dag.test gives the run's start_date
    ((started, finished),) = pipeline.fetch("SELECT started_at, finished_at FROM runs")
    assert began <= started <= finished <= ended
    stamps = pipeline.fetch("SELECT loaded_at FROM receipts UNION ALL SELECT quarantined_at FROM quarantine")
    assert stamps == [(started,)]
    # staged per model batch and per task, the task's file named by its batch's content
    staged = list((pipeline.root / "staging").rglob("*.jsonl"))
    assert sorted(p.parent.name == "chunks" for p in staged) == [False, True], staged
    assert any(p.name.startswith("batch-00000-") for p in staged), staged
    before = table_state(pipeline)
    assert len(before["receipts"]) + len(before["quarantine"]) == 1

    second = pipeline.run(DAYS[0])

    assert second.state == "success", pipeline.task_states(second)
    states = pipeline.task_states(second)
    assert states["extract"] == "skipped"  # nothing new: no batch to map over
    assert table_state(pipeline) == before
    runs = pipeline.fetch("SELECT run_id, counts FROM runs ORDER BY started_at")
    assert {r[0] for r in runs} == {first.run_id, second.run_id}
    assert '"discovered": 0' in runs[-1][1] or "'discovered': 0" in runs[-1][1]


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _backfill_plan(dag, start: dt.date, end: dt.date):
    """The runs ``airflow backfill create --from-date START --to-date END`` would create,
    from Airflow's own backfill planner. (A backfill run's logical date is its partition
    day; ``dag.test`` makes manual runs, so the tests pass ``run_after`` to get the same
    data interval.)"""
    from airflow.models.backfill import _get_info_list
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    return _get_info_list(from_date=_midnight(start), to_date=_midnight(end),
                          reverse=False, dag=serialized)


@pytest.mark.slow
def test_three_day_backfill_equals_daily_runs(pipeline, tmp_path_factory, monkeypatch):
    _fill(pipeline)
    for day in DAYS:  # the daily schedule
        assert pipeline.run(day).state == "success"
    daily = table_state(pipeline)
    assert len(daily["receipts"]) + len(daily["quarantine"]) == 3

    plan = _backfill_plan(pipeline.dag, DAYS[0], DAYS[-1])
    assert [(i.logical_date.date(), i.data_interval.start.date(), i.data_interval.end.date())
            for i in plan] == [(d, d, d + dt.timedelta(days=1)) for d in DAYS]

    # backfilling over the daily results: no duplicates, nothing changes
    for info in plan:
        assert pipeline.dag.test(logical_date=info.run_after, run_conf={"extractor": None}).state == "success"
    assert table_state(pipeline) == daily

    # a backfill into an empty warehouse (same source) gives the daily state
    url = f"duckdb:///{tmp_path_factory.mktemp('backfill') / 'warehouse.duckdb'}"
    monkeypatch.setenv("RECEIPT_WAREHOUSE_URL", url)
    for info in plan:
        dag_run = pipeline.dag.test(logical_date=info.run_after, run_conf={"extractor": None})
        assert dag_run.state == "success"
        assert (dag_run.data_interval_start, dag_run.data_interval_end) == (
            info.data_interval.start, info.data_interval.end)
    assert table_state(Pipeline(root=pipeline.root, dag=pipeline.dag, warehouse_url=url)) == daily
