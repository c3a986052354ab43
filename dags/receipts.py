"""
### receipts_daily: one day of receipt images -> validated warehouse rows

The run with logical date D reads partition `<receipts_source>/dt=D/` (data interval
[D, D+1) UTC; a manual trigger at X reads the last complete day before X). It resolves
the extractor (DAG-run param `extractor` > `model` of the Variable `receipts_config`), makes the model
available, discovers receipts that extractor version has not seen, extracts them (mapped
tasks, pool `gpu`), validates (Great Expectations), loads, reconciles and reports, then
prunes staged files of runs older than the retention (`staging_retention_days`).
Each run's Data Docs page and the quality report over time are in the Data Docs folder,
linked from the run's **Data Docs** tab and the **Receipt quality** menu (docs/quality.md).

**Idempotent.** A receipt's id is the sha256 of its bytes; rows are keyed by (receipt
id, extractor version) and written in one transaction; a run only extracts what the
warehouse lacks for its version. Re-running a day, clearing a task or backfilling
(`airflow backfill create --dag-id receipts_daily --from-date A --to-date B`) converges
to the rows of the daily runs, never duplicates. A new extractor version re-extracts;
setting the Variable back is a rollback (old rows are kept). Every discovered receipt
ends loaded or quarantined with a reason, or the run fails. See docs/pipeline.md.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Asset, CronDataIntervalTimetable, DeadlineAlert, Param, SyncCallback, dag, task
from receipts_deadline import DailyRunIntervalEnd
from receipts_notifiers import build_notifiers, on_deadline_missed, on_run_failure, on_task_failure

from extractor.pipeline import tasks
from extractor.pipeline.config import GPU_POOL, RECEIPTS_ASSET_URI, extract_timeout, gpu_queue, run_deadline
from extractor.spec import PRESETS


@dag(
    dag_id="receipts_daily",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),  # a run per day-long interval
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False, max_active_runs=4, doc_md=__doc__, tags=["receipts", "etl"],
    params={"extractor": Param(None, type=["null", "string", "object"], examples=sorted(PRESETS),
                               description="preset name or JSON spec; overrides the Variable")},
    default_args={"retries": int(os.environ.get("RECEIPT_TASK_RETRIES", "2")),
                  "retry_delay": dt.timedelta(
                      seconds=int(os.environ.get("RECEIPT_TASK_RETRY_DELAY_S", "120"))),
                  "on_failure_callback": on_task_failure},
    on_failure_callback=on_run_failure,
    # a scheduled run not finished run_deadline() after its day ends alerts (docs/alerts.md)
    deadline=[DeadlineAlert(reference=DailyRunIntervalEnd(), interval=run_deadline(),
                            callback=SyncCallback(on_deadline_missed))] if run_deadline() else None,
)
def receipts_daily():
    @task(multiple_outputs=False)
    def resolve_extractor() -> dict:
        return tasks.resolve_extractor()

    @task(multiple_outputs=False)
    def ensure_model(extractor: dict) -> dict:
        return tasks.ensure_model(extractor)

    @task(multiple_outputs=False)
    def discover_new_receipts(extractor: dict) -> list:
        return tasks.discover_new_receipts(extractor)

    # execution_timeout frees the GPU slot of a hung model
    @task(multiple_outputs=False, pool=GPU_POOL, queue=gpu_queue(), execution_timeout=extract_timeout(),
          map_index_template="batch {{ ti.map_index }}: {{ task.op_kwargs['batch'] | length }} receipts")
    def extract(batch: list, extractor: dict, model: dict) -> dict:
        return tasks.extract_batch(batch, extractor, model)

    # zero new receipts: extract is skipped, still load the run
    @task(multiple_outputs=False, trigger_rule="none_failed")
    def validate_and_load(staged, extractor: dict, discovered: dict, batches: list) -> dict:
        return tasks.validate_and_load(staged, extractor, discovered, batches,
                                       notifiers=build_notifiers())

    @task(multiple_outputs=False)
    def reconcile(batches, extractor: dict, summary: dict) -> dict:
        return tasks.reconcile(batches, extractor)

    @task(multiple_outputs=False, outlets=[Asset(RECEIPTS_ASSET_URI)])
    def report(summary: dict, reconciliation: dict) -> dict:
        return tasks.report(summary, reconciliation)

    @task(multiple_outputs=False, trigger_rule="all_done")  # also after a failed run: that is one the charts must show
    def quality_report() -> dict:  # quality over time, beside the Data Docs
        return tasks.refresh_quality_report()

    @task(multiple_outputs=False)
    def prune_staging() -> dict:  # staged files of runs older than the retention
        return tasks.prune_staging()

    @task(multiple_outputs=False)
    def quality_gate(summary: dict) -> dict:  # pass: success; alert: skipped (visible in the grid)
        return tasks.quality_gate(summary)

    extractor = resolve_extractor()
    batches = discover_new_receipts(extractor)  # its counts travel under the XCom key "counts"
    staged = extract.partial(extractor=extractor, model=ensure_model(extractor)).expand(
        batch=batches)
    summary = validate_and_load(staged, extractor, batches["counts"], batches)
    reported = report(summary, reconcile(batches, extractor, summary))
    reported >> [prune_staging(), quality_report(), quality_gate(summary)]


receipts_daily()
