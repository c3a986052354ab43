"""The main job on the embedded default: ``python -m extractor.demo`` (``make demo``).

1. copies the bundled sample receipts into ``var/incoming/dt=<today>/``;
2. prepares an Airflow home in ``var/airflow`` (SQLite metadata, migrated), the JSON
   Variable ``receipts_config`` (``{"model": "ocr"}``, the CPU OCR preset, when it is not
   set yet; the production default is Llama 3.2 11B Vision, which needs a GPU and the
   weights) and the ``gpu`` pool. Folders are NOT stored in Variables (a moved checkout
   would write to the old place): this process passes them as ``RECEIPT_*`` environment,
   and without it the defaults (``var/...`` under the working folder) are the demo's own;
3. runs the real ``receipts_daily`` DAG once with ``dag.test()`` for today's partition
   (the run whose data interval is [today, tomorrow) UTC);
4. prints what landed in the warehouse (``var/warehouse.duckdb``).

Running it again the same day is a no-op run (every receipt is already extracted by
this extractor version) that prints the same table: the pipeline is idempotent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SAMPLES = PACKAGE / "samples" / "receipts"


def project_root() -> Path:
    """The repository (where dags/ and plugins/ live); the editable install points here."""
    root = PACKAGE.parent.parent
    return root if (root / "dags").is_dir() else Path.cwd()


def configure_environment(root: Path, var: Path, *, verbose: bool) -> dict[str, str]:
    """Airflow and pipeline settings for the embedded default; must run before airflow is imported."""
    settings = {
        "AIRFLOW_HOME": str(var / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # quiet by default: the table at the end says what happened (--verbose: task logs)
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO" if verbose else "ERROR",
        "RECEIPT_SOURCE": str(var / "incoming"),
        "RECEIPT_WAREHOUSE_URL": f"duckdb:///{var / 'warehouse.duckdb'}",
        "RECEIPT_STAGING_DIR": str(var / "staging"),
        "RECEIPT_DATA_DOCS_DIR": str(var / "data_docs"),
        "RECEIPT_MODEL_CACHE": str(var / "models"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "HF_HUB_OFFLINE": "1",
    }
    for key, value in settings.items():
        if key.startswith("AIRFLOW") or key not in os.environ:  # pipeline paths may be overridden
            os.environ[key] = value
    (var / "airflow").mkdir(parents=True, exist_ok=True)
    plugins = str(root / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    return settings


def copy_samples(incoming: Path, day: dt.date, limit: int | None = None) -> list[Path]:
    partition = incoming / f"dt={day.isoformat()}"
    partition.mkdir(parents=True, exist_ok=True)
    copied = []
    for image in sorted(SAMPLES.glob("*.jpg"))[:limit]:
        target = partition / image.name
        if not target.exists():
            shutil.copyfile(image, target)
        copied.append(target)
    return copied


DEMO_CONFIG = {"model": "ocr"}  # no paths: they follow the checkout (RECEIPT_* / defaults)


def prepare_airflow() -> None:
    """Migrate the SQLite metadata DB, set the configuration Variable when no model is
    configured (the CPU OCR preset), create the pool."""
    # The metadata-DB model, not airflow.sdk.Variable: the SDK writes through a running
    # task's supervisor, and this process is no task.
    from airflow.models import Variable  # noqa: AIR311
    from airflow.models.pool import Pool
    from airflow.utils import db

    from extractor.settings import CONFIG_VARIABLE, LEGACY_VARIABLES

    db.upgradedb()
    names = (CONFIG_VARIABLE, LEGACY_VARIABLES["model"])
    if all(Variable.get(name, default_var=None) is None for name in names):  # noqa: AIR311
        Variable.set(CONFIG_VARIABLE, json.dumps(DEMO_CONFIG),  # noqa: AIR311
                     description="embedded default (python -m extractor.demo): CPU OCR reader")
    Pool.create_or_update_pool("gpu", slots=1, description="extract tasks (one model per worker)",
                               include_deferred=False)


def run_dag(root: Path, day: dt.date, extractor: str | None):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(root / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag("receipts_daily")
    logical_date = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    conf = {"extractor": extractor} if extractor else None
    return dag.test(logical_date=logical_date, run_conf=conf)


def print_warehouse(url: str, files: list[Path], run_id: str, state: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from extractor.pipeline.warehouse import open_warehouse

    ids = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    marks = ", ".join("?" * len(ids))
    warehouse = open_warehouse(url)
    try:
        run = warehouse.fetch("SELECT extractor_version, decision, counts FROM runs WHERE run_id = ?",
                              (run_id,))
        version = run[0][0] if run else None
        receipts = warehouse.fetch(
            f"SELECT source, store_name, date, total, currency, run_id FROM receipts "
            f"WHERE extractor_version = ? AND receipt_id IN ({marks}) ORDER BY source",
            (version, *ids)) if version else []
        quarantine = warehouse.fetch(
            f"SELECT source, stage, reason FROM quarantine "
            f"WHERE extractor_version = ? AND receipt_id IN ({marks}) ORDER BY source",
            (version, *ids)) if version else []
    finally:
        warehouse.close()
    console = Console(width=max(Console().width, 110))
    console.print(f"\nreceipts_daily run [bold]{run_id}[/]: {state}; extractor {version}")
    if run:
        counts = json.loads(run[0][2]) if isinstance(run[0][2], str) else run[0][2]
        console.print(f"this run: {counts.get('discovered', 0)} new receipts, {counts.get('valid', 0)} "
                      f"loaded, {counts.get('quarantined', 0)} quarantined; decision {run[0][1]}")
    table = Table(title=f"warehouse {url}: receipts of this partition")
    for column in ("file", "store", "date", "total", "currency", "loaded by run"):
        table.add_column(column)
    for source, store, date, total, currency, loaded_by in receipts:
        table.add_row(Path(source).name, store or "-", str(date or "-"),
                      f"{total:.2f}" if total is not None else "-",
                      currency or "-", "this run" if loaded_by == run_id else loaded_by)
    console.print(table)
    console.print(f"quarantined: {len(quarantine)}")
    for source, stage, reason in quarantine:
        console.print(f"  {Path(source).name} ({stage}): {reason[:160]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extractor.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--date", type=dt.date.fromisoformat, default=None,
                        help="partition day (default: today, UTC)")
    parser.add_argument("--extractor", default=None,
                        help="override the Variable for this run (DAG-run param), e.g. ocr")
    parser.add_argument("--verbose", action="store_true", help="show Airflow's task logs")
    parser.add_argument("--var-dir", type=Path, default=None,
                        help="where the demo keeps its state (default: <repo>/var)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    args = parser.parse_args(argv)
    root = project_root()
    var = (args.var_dir or root / "var").absolute()
    settings = configure_environment(root, var, verbose=args.verbose)
    day = args.date or dt.datetime.now(dt.UTC).date()
    files = copy_samples(Path(os.environ["RECEIPT_SOURCE"]), day, args.limit)
    print(f"{len(files)} receipts in {Path(os.environ['RECEIPT_SOURCE']) / f'dt={day}'}; "
          f"Airflow home {settings['AIRFLOW_HOME']}")
    prepare_airflow()
    dag_run = run_dag(root, day, args.extractor)
    state = str(getattr(dag_run.state, "value", dag_run.state))
    print_warehouse(os.environ["RECEIPT_WAREHOUSE_URL"], files, dag_run.run_id, state)
    return 0 if state == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
