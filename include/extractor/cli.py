"""Command line: python -m extractor {extract,batch,compare,eval,report,export-labels,serve,presets}
(or receipt-extractor).

--model takes what the configuration's "model" key takes: a preset name (ocr,
llama-3.2-11b-vision-instruct ...) or a JSON spec ('{"preset": "ocr", "batch_size": 4}').
Without --model, the model comes from receipts.yaml (--config, $RECEIPTS_CONFIG or
./receipts.yaml), then $RECEIPT_MODEL, then the CPU OCR reader. Models with weights are
made available through the model store first (--model-dir or $LLAMA_MODEL_PATH load a
local folder instead).

Errors are one line on stderr: exit code 2 for usage and configuration errors (a missing
file, an unknown preset, a bad spec, a model that cannot be fetched), 1 when receipts
failed or on an unexpected error; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from extractor.errors import ExtractorError
from extractor.images import ReceiptInput
from extractor.schema import ExtractionResult, scalar_fields
from extractor.spec import PRESETS, resolve_spec

PROG = "receipt-extractor"
CLI_DEFAULT_MODEL = "ocr"  # the command line runs anywhere: the CPU reader unless told otherwise
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


class UsageError(ExtractorError):
    """A command line that cannot be run as given (exit code 2)."""


def _settings(args: argparse.Namespace):
    """The configuration file's settings, read once per command (every command checks it)."""
    if getattr(args, "settings", None) is None:
        from extractor import settings

        args.settings = settings.from_file(settings.config_file(args.config))
    return args.settings


def _model(args: argparse.Namespace, value: str | None = None):
    """--model (or the given value), else the configuration's model, else the OCR reader."""
    return value or getattr(args, "model", None) or _settings(args).get("model", CLI_DEFAULT_MODEL)


def _backend(args: argparse.Namespace, model=None):
    from extractor.backends import load_backend
    from extractor.model_store import ensure_model, pin_revision

    spec = resolve_spec(_model(args, model))
    model_dir = getattr(args, "model_dir", None)
    if model_dir is None:  # the store knows which backends have weights (None for ocr)
        cache_dir = args.cache_dir or _settings(args).get("model_cache")
        spec = pin_revision(spec)  # a Hub branch -> its commit: the version names the snapshot
        path = ensure_model(spec, cache_dir)
        model_dir = str(path) if path else None
    elif not Path(model_dir).is_dir():
        raise UsageError(f"--model-dir {model_dir}: no such folder")
    return load_backend(spec, model_dir=model_dir)


def _existing_file(value: str, what: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"{what} {value}: no such file")
    return path


def _record(result: ExtractionResult) -> dict:
    return json.loads(result.model_dump_json())


def _console():
    from rich.console import Console

    # Piped output (CI logs, files) gets a wide table rather than truncated cells.
    return Console(width=None if sys.stdout.isatty() else 200)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def cmd_extract(args: argparse.Namespace) -> int:
    path = _existing_file(args.image, "image")
    backend = _backend(args)
    [result] = backend.extract([ReceiptInput.from_bytes(path.read_bytes(), str(path))])
    print(json.dumps(_record(result), indent=2, ensure_ascii=False))
    return 0 if result.status == "ok" else 1


def _csv_row(r: ExtractionResult) -> dict:
    row = {"source": r.source, "receipt_id": r.receipt_id, "status": r.status, "reason": r.reason}
    if r.receipt is not None:
        row.update(r.receipt.model_dump(include=set(scalar_fields()), mode="json"))
    return row


def cmd_batch(args: argparse.Namespace) -> int:
    """Extract a folder; results are written as each batch finishes (streamed), so memory
    holds one batch of images and results, however many receipts the folder has."""
    from rich.progress import Progress

    if not Path(args.input_dir).is_dir():
        raise UsageError(f"--input-dir {args.input_dir}: no such folder")
    paths = _images(Path(args.input_dir))
    if not paths:
        raise UsageError(f"--input-dir {args.input_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    backend = _backend(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = args.batch_size or backend.spec.batch_size
    counts = {"ok": 0, "failed": 0}
    t0 = time.perf_counter()
    columns = ["source", "receipt_id", "status", "reason", *scalar_fields()]
    with open(out / "receipts.jsonl", "w") as jsonl, open(out / "receipts.csv", "w", newline="") as table, \
            Progress(transient=True) as progress:
        writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        task = progress.add_task("extracting", total=len(paths))
        for start in range(0, len(paths), size):
            chunk = paths[start:start + size]
            for r in backend.extract([ReceiptInput.from_bytes(p.read_bytes(), str(p)) for p in chunk]):
                jsonl.write(r.model_dump_json() + "\n")
                writer.writerow(_csv_row(r))
                counts["ok" if r.status == "ok" else "failed"] += 1
            progress.advance(task, len(chunk))
    elapsed = time.perf_counter() - t0
    n = counts["ok"] + counts["failed"]
    summary = {"receipts": n, **counts, "seconds": round(elapsed, 2), "receipts_per_s": round(n / elapsed, 3),
               "extractor_version": backend.version, "output": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table([summary], list(summary), title="batch summary")
    return 1 if summary["failed"] else 0  # scripts and CI see that receipts failed


def cmd_compare(args: argparse.Namespace) -> int:
    path = _existing_file(args.image, "--image")
    item = ReceiptInput.from_bytes(path.read_bytes(), str(path))
    rows = {}
    for label, model in (("a", args.model_a), ("b", args.model_b)):
        [result] = _backend(args, model).extract([item])
        rows[label] = result
    fields = ["status", "reason", *scalar_fields()]
    table = []
    for name in fields:
        values = []
        for r in (rows["a"], rows["b"]):
            if name in ("status", "reason"):
                values.append(getattr(r, name))
            else:
                values.append(getattr(r.receipt, name) if r.receipt else None)
        mark = "" if values[0] == values[1] else "≠"
        table.append({"field": name, args.model_a: _s(values[0]), args.model_b: _s(values[1]), "": mark})
    _print_table(table, ["field", args.model_a, args.model_b, ""], title=str(path))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from extractor.evaluation import evaluate, load_labels

    pairs = load_labels(args.dataset, args.limit)  # nothing is created before the input is found
    backend = _backend(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with Progress(transient=True) as progress:
        task = progress.add_task("evaluating", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = evaluate(backend, args.dataset, pairs=pairs, progress=tick)
    (out / "eval.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    markdown = report.to_markdown()
    (out / "eval.md").write_text(markdown)
    report.save_chart(str(out / "eval.png"))
    print(markdown)
    print(f"\nwritten: {out / 'eval.json'}, {out / 'eval.md'}, {out / 'eval.png'}")
    return 0


def cmd_export_labels(args: argparse.Namespace) -> int:
    import boto3  # receipts on S3: credentials and endpoint from the usual AWS environment

    from extractor.pipeline.review.export import export_labels
    from extractor.pipeline.warehouse import open_warehouse

    warehouse = open_warehouse(args.warehouse)
    try:
        warehouse.ensure_schema()
        summary = export_labels(warehouse, args.output_dir, s3_client=boto3.client("s3"))
    finally:
        warehouse.close()
    for receipt_id, reason in summary.missing_images.items():
        print(f"not exported: {receipt_id}: {reason}", file=sys.stderr)
    print(json.dumps({**summary.to_dict(), "output_dir": args.output_dir}))
    return 1 if summary.missing_images else 0


def _add_export_labels(sub) -> None:
    p = sub.add_parser("export-labels", help="reviewed receipts as an eval dataset (images/ + labels/)")
    p.add_argument("--warehouse", required=True, help="duckdb:///path or postgresql://... URL")
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_export_labels)


def cmd_presets(args: argparse.Namespace) -> int:
    from extractor.model_store import COMMIT_SHA

    rows = []
    for name in PRESETS:
        spec = resolve_spec(name)
        revision = spec.revision or "main"
        pinned = "commit" if COMMIT_SHA.fullmatch(revision) else (
            "branch: its commit when fetched" if spec.backend != "ocr" else "package version")
        rows.append({"preset": name, "backend": spec.backend, "model_id": spec.model_id,
                     "revision": revision, "pinned to": pinned, "batch_size": spec.batch_size})
    _print_table(rows, list(rows[0]), title="extractor presets")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from extractor.serving.app import serve

    cache_dir = args.cache_dir or _settings(args).get("model_cache")
    serve(model=args.model, model_dir=args.model_dir, cache_dir=cache_dir, host=args.host,
          port=args.port, on_other_model=args.on_other_model, max_wait_ms=args.max_wait_ms,
          warmup=not args.no_warmup)
    return 0


def _days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of days >= 1, not {text!r}")
    return int(text)


def cmd_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from extractor.pipeline.quality.report import write_report
    from extractor.pipeline.warehouse import open_warehouse

    if args.warehouse.startswith("duckdb:///") and not Path(args.warehouse[len("duckdb:///"):]).exists():
        raise UsageError(f"--warehouse {args.warehouse}: no such DuckDB file")  # never create one
    try:
        end = dt.date.fromisoformat(args.end) if args.end else None
        warehouse = open_warehouse(args.warehouse)
    except ValueError as exc:  # a date that is not YYYY-MM-DD, an unsupported URL
        raise UsageError(str(exc)) from exc
    try:
        warehouse.ensure_schema()
        result = write_report(warehouse, args.output_dir, days=args.days, end=end)
    finally:
        warehouse.close()
    print(f"quality report {result['start']} .. {result['end']}: {result['runs']} runs, "
          f"{len(result['versions'])} extractor versions -> {result['page']}")
    return 0


def _s(value: object) -> str:
    return "" if value is None else str(value)


def _print_table(rows: list[dict], columns: list[str], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*(_s(row.get(c)) for c in columns))
    _console().print(table)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage is one --help away), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Read receipts with a vision-language model or the CPU "
                                            "OCR reader; score them against labels.",
                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="settings file (default: $RECEIPTS_CONFIG, then ./receipts.yaml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        if model:
            p.add_argument("--model", help="preset name or JSON spec (default: the configuration's "
                                           "model, else $RECEIPT_MODEL, else ocr)")
            p.add_argument("--model-dir", help="load the model from this local folder")
        p.add_argument("--cache-dir", help="model cache (default: the configuration's model_cache, "
                                           "else $RECEIPT_MODEL_CACHE, else ./var/models)")

    p = sub.add_parser("extract", help="extract one receipt and print its JSON record")
    p.add_argument("image")
    common(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("batch", help="extract a folder of receipts to JSONL and CSV (exit 1 if any failed)")
    p.add_argument("--input-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int)
    common(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("compare", help="two extractors on one receipt, side by side")
    p.add_argument("--image", required=True)
    p.add_argument("--model-a", required=True)
    p.add_argument("--model-b", required=True)
    common(p, model=False)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", help="per-field accuracy against labelled receipts")
    p.add_argument("--dataset", required=True,
                   help="folder with images/ and labels/ (sroie-dev), or X.jpg + X.label.json pairs "
                        "(the bundled samples)")
    p.add_argument("--output-dir", default="var/eval")
    p.add_argument("--limit", type=int)
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="quality over time from the warehouse: HTML page + PNG charts")
    p.add_argument("--warehouse", required=True, help="duckdb:///path or postgresql://... URL")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--days", type=_days, default=30, help="days of partitions to show (default 30)")
    p.add_argument("--end", help="last partition day shown, YYYY-MM-DD (default: today, UTC)")
    p.set_defaults(func=cmd_report)

    _add_export_labels(sub)
    _add_serve_parser(sub)

    p = sub.add_parser("presets", help="list the model presets and the revision each is pinned to")
    p.set_defaults(func=cmd_presets)
    for command in sub.choices.values():  # --debug after the command works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks")
    return parser


def _add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="the resident extraction service (one per GPU): load once, serve HTTP")
    p.add_argument("--model", default=os.environ.get("RECEIPT_SERVICE_MODEL") or None,
                   help="preset or JSON spec to load at start (default: $RECEIPT_SERVICE_MODEL; "
                        "none: the first request's)")
    p.add_argument("--model-dir", help="load the model from this local folder")
    p.add_argument("--cache-dir", help="model cache (default: the configuration's model_cache, "
                                       "else $RECEIPT_MODEL_CACHE, else ./var/models)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--on-other-model", choices=("reload", "refuse"), default="reload",
                   help="a request for another spec: switch models (default) or answer 409")
    p.add_argument("--max-wait-ms", type=float, default=50,
                   help="how long a part-filled batch waits for receipts of other requests")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the start-up batch of sample receipts (hf models warm their engine with it)")
    p.set_defaults(func=cmd_serve)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _settings(args)
        return args.func(args)
    except (ExtractorError, OSError) as exc:
        # usage and configuration errors (UsageError, ConfigError, ModelSourceError: a model
        # that cannot be fetched; a file that cannot be read): the message says it all.
        # Receipt-level problems never get here: they are results with a reason.
        if args.debug:
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment problem: one line, traceback on --debug
        if args.debug:
            raise
        print(f"{PROG}: unexpected error: {type(exc).__name__}: {_one_line(exc)} "
              f"(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
