"""Benchmark: validate and load 10,000 staged receipts on DuckDB and on PostgreSQL.

    .venv/bin/python bench/validate_load.py [--n 10000] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
                                            [--out bench/results/validate_load.json]

Generates realistic staged results (extractor.testing.synthetic_results: varied stores,
currencies, line items; 5% broken one known way each, 2% extraction failures), writes
them as a staged JSONL file, then times, in one fresh process:
  read      read_staged() of the JSONL file
  validate  validate_results() with Data Docs; the first call pays the GX import
            (reported separately), the second is warm
  load      Warehouse.load() into an empty DuckDB file / a fresh PostgreSQL database,
            then the same load again (the idempotent re-run path: delete + insert)
The target (issue 2) is read + validate + load <= 30 s for 10,000 records per backend.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from extractor.pipeline.quality.validation import validate_results
from extractor.pipeline.records import RunRecord
from extractor.pipeline.sources.staging import read_staged, write_staged
from extractor.pipeline.warehouse import open_warehouse
from extractor.testing.synthetic_results import make_results

LOGICAL = dt.date(2024, 6, 30)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - t0


def run_record(version: str) -> RunRecord:
    start = dt.datetime(2024, 7, 1, 0, 5, tzinfo=dt.UTC)
    return RunRecord(run_id="bench__2024-06-30", dag_id="receipts_daily", logical_date=LOGICAL,
                     partition_start=LOGICAL, partition_end=LOGICAL + dt.timedelta(days=1),
                     extractor_version=version, model_id="rapidocr", revision="3.10.0",
                     prompt_version="parser-v3", started_at=start, decision="pass")


def bench_load(url: str, outcome, version: str) -> dict:
    wh = open_warehouse(url)
    _, t_schema = timed(wh.ensure_schema)
    counts, t_load = timed(wh.load, outcome.valid, outcome.quarantined, run_record(version))
    again, t_reload = timed(wh.load, outcome.valid, outcome.quarantined, run_record(version))
    tables = wh.table_counts()
    wh.close()
    assert again["replaced_receipts"] == counts["receipts"], "reload must replace, not add"
    return {"ensure_schema_s": t_schema, "load_s": t_load, "reload_s": t_reload,
            "counts": counts, "tables": tables}


def create_pg_database(admin_url: str) -> tuple[str, callable]:
    import psycopg

    admin = psycopg.connect(admin_url, autocommit=True)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop():
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="admin URI; a scratch database is created and dropped ('' to skip)")
    ap.add_argument("--out", default="bench/results/validate_load.json")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (staged file, "
                    "DuckDB file, Data Docs) instead of deleting it")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="bench-validate-load-"))
    try:
        return _run(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    (results, broken), t_gen = timed(make_results, args.n, seed=42, logical_date=LOGICAL)
    version = results[0].extractor_version
    staged, t_write = timed(write_staged, results, work / "staged.jsonl")
    loaded, t_read = timed(read_staged, staged["uri"])

    docs = work / "data_docs"
    outcome, t_val_cold = timed(validate_results, loaded, logical_date=LOGICAL,
                                run_id="bench__2024-06-30", data_docs_dir=str(docs))
    gx_import = outcome.stats["timings"].get("gx_import_s", 0.0)
    _, t_val_warm = timed(validate_results, loaded, logical_date=LOGICAL,
                          run_id="bench__2024-06-30-warm", data_docs_dir=str(docs))
    held = {q.receipt_id for q in outcome.quarantined}
    # A breakage can be undone by the schema's normalisers when the staged file is read
    # back (card_last4 "12a4" -> None), so report what was caught per kind.
    by_kind: dict[str, list[int]] = {}
    for rid, kind in broken.items():
        by_kind.setdefault(kind, [0, 0])[rid in held] += 1
    caught = {k: {"caught": v[1], "missed": v[0]} for k, v in sorted(by_kind.items())}
    false_positives = len(held - set(broken))

    backends = {"duckdb": bench_load(f"duckdb:///{work}/bench.duckdb", outcome, version)}
    if args.pg:
        url, drop = create_pg_database(args.pg)
        try:
            backends["postgres"] = bench_load(url, outcome, version)
        finally:
            drop()

    import duckdb
    import great_expectations
    import pandas
    import psycopg
    report = {
        "n": args.n, "valid": len(outcome.valid), "quarantined": len(outcome.quarantined),
        "breakage_caught": caught, "false_positives": false_positives,
        "decision": outcome.decision,
        "generate_s": t_gen, "write_staged_s": t_write, "read_staged_s": t_read,
        "validate_cold_s": t_val_cold, "gx_import_s": gx_import, "validate_warm_s": t_val_warm,
        "validation_timings": outcome.stats["timings"], "backends": backends,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "note": "shared with other jobs"},
        "versions": {"great_expectations": great_expectations.__version__,
                     "duckdb": duckdb.__version__, "pandas": pandas.__version__,
                     "psycopg": psycopg.__version__},
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    for b in backends.values():
        b["read_validate_load_cold_s"] = t_read + t_val_cold + b["load_s"]
        b["read_validate_load_warm_s"] = t_read + t_val_warm + b["load_s"]

    print(f"\n{args.n} staged receipts: {len(outcome.valid)} valid, {len(outcome.quarantined)} "
          f"quarantined, decision {outcome.decision}; false positives {false_positives}; "
          "injected breakage caught/missed: "
          + ", ".join(f"{k} {v['caught']}/{v['missed']}" for k, v in caught.items()))
    print(f"read_staged {t_read:6.2f} s | validate cold {t_val_cold:6.2f} s "
          f"(GX import {gx_import:.2f} s) | validate warm {t_val_warm:6.2f} s")
    print(f"{'backend':10} {'schema s':>9} {'load s':>8} {'reload s':>9} {'read+validate+load s':>22}")
    for name, b in backends.items():
        print(f"{name:10} {b['ensure_schema_s']:9.2f} {b['load_s']:8.2f} {b['reload_s']:9.2f} "
              f"{b['read_validate_load_cold_s']:12.2f} cold /{b['read_validate_load_warm_s']:6.2f} warm")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
