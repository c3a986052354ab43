"""Benchmark: what the quality_report task costs (the report over a 30-day window).

    .venv/bin/python bench/quality_report.py [--days 30] [--receipts 200]
                                             [--out bench/results/quality_report.json]

Fills a fresh DuckDB warehouse with ``--days`` daily runs (``--receipts`` synthetic receipts
each, validated and loaded the way the pipeline does it: extractor.testing.quality_history,
a model switch two thirds of the way through; not timed), then times, in one process:
  import   importing the report module and matplotlib (what a fresh task process pays)
  cold     the first write_report() of the window (five PNG charts + page + JSON)
  warm     the same again (the cost without first-use overheads)
and the size of each PNG. The load average of the machine is recorded beside the numbers:
on a shared machine they are upper bounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

END = dt.date(2026, 3, 31)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--receipts", type=int, default=200)
    parser.add_argument("--out", default="bench/results/quality_report.json")
    args = parser.parse_args()

    from extractor.pipeline.warehouse import open_warehouse
    from extractor.testing.quality_history import fill_history

    work = Path(tempfile.mkdtemp(prefix="bench-quality-report-"))
    warehouse = open_warehouse(f"duckdb:///{work / 'warehouse.duckdb'}")
    warehouse.ensure_schema()
    first = END - dt.timedelta(days=args.days - 1)
    fill_history(warehouse, first, first + dt.timedelta(days=2 * args.days // 3), END,
                 receipts=args.receipts)

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    import matplotlib.figure  # noqa: F401  (what a fresh task process imports)

    from extractor.pipeline.quality.report import write_report
    t1 = time.perf_counter()
    result = write_report(warehouse, work / "report", days=args.days, end=END)
    t2 = time.perf_counter()
    write_report(warehouse, work / "report", days=args.days, end=END)
    t3 = time.perf_counter()
    warehouse.close()

    sizes = {Path(p).name: Path(p).stat().st_size for p in result["charts"].values()}
    record = {
        "days": args.days, "receipts_per_day": args.receipts, "runs": result["runs"],
        "versions": len(result["versions"]),
        "import_s": round(t1 - t0, 3), "cold_s": round(t2 - t1, 3), "warm_s": round(t3 - t2, 3),
        "png_bytes": sizes,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, load avg "
                   f"{load_before:.1f} before timing, {os.getloadavg()[0]:.1f} after",
        "python": sys.version.split()[0],
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
