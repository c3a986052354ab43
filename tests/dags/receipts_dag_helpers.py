"""Helpers of the DAG tests (a module with a unique name: test files import it directly,
which ``from conftest import ...`` cannot do safely next to other test folders' conftests)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "include" / "extractor" / "samples" / "receipts"


def logical_date_for(day: dt.date) -> dt.datetime:
    """``dag.test`` makes a manual run, whose data interval is the last complete day before
    its logical date: partition ``day`` is processed by a manual run at the next midnight
    (a scheduled or backfill run has logical date ``day`` itself)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


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


def synthetic_receipt(seed: int, **overrides) -> bytes:
    """A rendered receipt the OCR reader reads well (fields known), dated by the caller."""
    from extractor.testing.synthetic import render_receipt

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
