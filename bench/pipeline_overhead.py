"""Pipeline overhead: how much of a receipts_daily run is NOT extraction.

Puts N receipts (rendered by ``extractor.testing.synthetic``) into one partition and runs the real
``receipts_daily`` DAG once with ``dag.test()`` (SQLite metadata, DuckDB warehouse) on a
fast backend: the tiny random-weight Mllama from ``extractor.testing.tiny_models`` through the
real HF backend (real processor, real ``generate``, ``max_new_tokens`` small). Extraction
time is what the backend spends inside ``Backend.extract`` (decode + forward +
postprocess), summed over the mapped extract tasks; everything else in the run's wall
time (discovery and hashing, model check, reading bytes, staging, scheduling and task
start-up, validation, load, reconcile, report) is overhead.

The tiny model's output is gibberish, so every receipt is quarantined before the
expectation suite runs; to cover that cost too, the script then validates and loads
N synthetic *valid* staged results (``extractor.testing.synthetic_results``) with the
same code the DAG calls, and reports the overhead share including it.

    .venv/bin/python bench/pipeline_overhead.py --receipts 1000
    .venv/bin/python bench/pipeline_overhead.py --receipts 1000 --runs 2   # + a warm second day

Numbers go to stdout (markdown) and bench/results/pipeline_overhead.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAY0 = dt.date(2026, 3, 1)


def configure(work: Path, spec: dict) -> None:
    os.environ.update({
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "RECEIPT_TASK_RETRIES": "0",
        "RECEIPT_SOURCE": str(work / "incoming"),
        "RECEIPT_WAREHOUSE_URL": f"duckdb:///{work / 'warehouse.duckdb'}",
        "RECEIPT_STAGING_DIR": str(work / "staging"),
        "RECEIPT_DATA_DOCS_DIR": str(work / "data_docs"),
        "RECEIPT_MODEL_CACHE": str(work / "models"),
        # the one configuration Variable; gibberish from a random model is all quarantined,
        # which is expected here
        "AIRFLOW_VAR_RECEIPTS_CONFIG": json.dumps({"model": spec, "thresholds": {
            "max_quarantine_rate_alert": 1.0, "max_quarantine_rate_fail": 1.0}}),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    })
    (work / "airflow").mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "plugins"))


def write_receipts(folder: Path, n: int, seed0: int) -> float:
    from extractor.testing.synthetic import render_receipt

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        data, _ = render_receipt(seed0 + i)
        (folder / f"r{i:05d}.jpg").write_bytes(data)
    return time.perf_counter() - t0


def run_day(dag, day: dt.date) -> dict:
    from extractor.pipeline.warehouse import open_warehouse

    logical_date = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    t0 = time.perf_counter()
    dag_run = dag.test(logical_date=logical_date)
    total = time.perf_counter() - t0
    state = str(getattr(dag_run.state, "value", dag_run.state))
    tasks: dict[str, float] = {}
    for ti in dag_run.get_task_instances():
        if ti.start_date and ti.end_date:
            tasks[ti.task_id] = tasks.get(ti.task_id, 0.0) + (ti.end_date - ti.start_date).total_seconds()
    with open_warehouse(os.environ["RECEIPT_WAREHOUSE_URL"]) as wh:
        (summary,), = wh.fetch("SELECT summary FROM runs WHERE run_id = ?", (dag_run.run_id,))
    summary = json.loads(summary)
    extract_s = summary["timings"]["extract_s"]
    return {"day": str(day), "state": state, "total_s": round(total, 2),
            "extract_s": round(extract_s, 2), "overhead_s": round(total - extract_s, 2),
            "overhead_share": round((total - extract_s) / total, 4),
            "task_seconds": {k: round(v, 2) for k, v in sorted(tasks.items())},
            "timings": summary["timings"], "counts": summary["counts"]}


def validate_and_load_valid(n: int) -> dict:
    """The suite + load on N valid staged results: the part the gibberish run skips."""
    from extractor.pipeline.quality.validation import validate_results
    from extractor.pipeline.records import RunRecord
    from extractor.pipeline.warehouse import open_warehouse
    from extractor.testing.synthetic_results import make_results

    results, _ = make_results(n, seed=7, bad_share=0.0, failed_share=0.0, logical_date=DAY0)
    # Importing GX is a once-per-process cost (the gibberish runs never import it): timed
    # apart from the per-run cost of the suite itself.
    ti = time.perf_counter()
    import great_expectations  # noqa: F401
    t0 = time.perf_counter()
    outcome = validate_results(results, logical_date=DAY0, run_id="bench-valid", data_docs_dir=None)
    t1 = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    run = RunRecord(run_id="bench-valid", dag_id="bench", logical_date=now, partition_start=now,
                    partition_end=now, extractor_version=results[0].extractor_version,
                    model_id=None, revision=None, prompt_version=None, started_at=now)
    with open_warehouse(os.environ["RECEIPT_WAREHOUSE_URL"]) as wh:
        wh.ensure_schema()
        wh.load(outcome.valid, outcome.quarantined, run)
    t2 = time.perf_counter()
    return {"rows": n, "valid": len(outcome.valid), "gx_import_s": round(t0 - ti, 2),
            "validate_s": round(t1 - t0, 2),
            "load_s": round(t2 - t1, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1, help="days to run (2nd+ are warm)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "pipeline_overhead.json"))
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pipeline-overhead-"))
    try:
        from extractor.testing.tiny_models import build_tiny_model

        model_dir = build_tiny_model("mllama", work / "tiny-mllama")
        spec = {"backend": "hf", "model_id": "tiny/mllama", "revision": "bench",
                "source": str(model_dir), "dtype": "float32", "device_map": None,
                "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
        configure(work, spec)
        render_s = 0.0
        for k in range(args.runs):
            day = DAY0 + dt.timedelta(days=k)
            render_s += write_receipts(work / "incoming" / f"dt={day}", args.receipts, seed0=k * 100_000)

        from airflow.dag_processing.dagbag import DagBag
        from airflow.models.pool import Pool
        from airflow.utils import db

        db.resetdb()
        Pool.create_or_update_pool("gpu", slots=1, description="bench", include_deferred=False)
        dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("receipts_daily")
        runs = [run_day(dag, DAY0 + dt.timedelta(days=k)) for k in range(args.runs)]
        valid = validate_and_load_valid(args.receipts)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    import torch

    report = {"receipts": args.receipts, "batch_size": args.batch_size,
              "max_new_tokens": args.max_new_tokens, "render_s": round(render_s, 1),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch threads "
                         f"{torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}",
              "runs": runs, "valid_rows_validate_load": valid}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\n{args.receipts} receipts/run, batch {args.batch_size}, max_new_tokens "
          f"{args.max_new_tokens}; {report['machine']}\n")
    print("| run | state | total s | extract s | overhead s | overhead share | "
          "+ suite on valid rows |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, r in enumerate(runs):
        # a cold process also pays the GX import once; a warm one has it loaded
        extra = valid["validate_s"] + valid["load_s"] + (valid["gx_import_s"] if i == 0 else 0.0)
        with_valid = (r["overhead_s"] + extra) / (r["total_s"] + extra)
        print(f"| {r['day']}{' (cold)' if i == 0 else ' (warm)'} | {r['state']} | {r['total_s']} | "
              f"{r['extract_s']} | {r['overhead_s']} | {r['overhead_share']:.1%} | {with_valid:.1%} |")
    for r in runs:
        print(f"\ntask seconds {r['day']}: {r['task_seconds']}\ntimings: {r['timings']}")
    print(f"\nvalidate + load of {valid['rows']} valid staged results: {valid}")
    return 0 if all(r["state"] == "success" for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
