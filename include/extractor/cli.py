"""Command line: ``python -m extractor {extract,batch,compare,eval,export-labels,presets}``.

``--model`` takes what the Airflow Variable takes: a preset name (``ocr``,
``llama-3.2-11b-vision-instruct`` ...), or a JSON spec (``'{"preset": "ocr", "batch_size": 4}'``).
Models with weights are made available through the model store first (``--model-dir``
skips that and loads a local folder directly).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from extractor.images import ReceiptInput
from extractor.schema import ExtractionResult, scalar_fields
from extractor.spec import PRESETS, resolve_spec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


def _backend(model: str, model_dir: str | None, cache_dir: str | None):
    from extractor.backends import load_backend

    spec = resolve_spec(model)
    if model_dir is None:  # the store knows which backends have weights (None for ocr)
        from extractor.model_store import ensure_model

        path = ensure_model(spec, cache_dir)
        model_dir = str(path) if path else None
    return load_backend(spec, model_dir=model_dir)


def _record(result: ExtractionResult) -> dict:
    return json.loads(result.model_dump_json())


def _console():
    from rich.console import Console

    # Piped output (CI logs, files) gets a wide table rather than truncated cells.
    return Console(width=None if sys.stdout.isatty() else 200)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def cmd_extract(args: argparse.Namespace) -> int:
    backend = _backend(args.model, args.model_dir, args.cache_dir)
    path = Path(args.image)
    [result] = backend.extract([ReceiptInput.from_bytes(path.read_bytes(), str(path))])
    print(json.dumps(_record(result), indent=2, ensure_ascii=False))
    return 0 if result.status == "ok" else 1


def cmd_batch(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    backend = _backend(args.model, args.model_dir, args.cache_dir)
    paths = _images(Path(args.input_dir))
    if not paths:
        print(f"no images under {args.input_dir}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = args.batch_size or backend.spec.batch_size
    results: list[ExtractionResult] = []
    t0 = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task("extracting", total=len(paths))
        for start in range(0, len(paths), size):
            chunk = paths[start:start + size]
            results += backend.extract([ReceiptInput.from_bytes(p.read_bytes(), str(p)) for p in chunk])
            progress.advance(task, len(chunk))
    elapsed = time.perf_counter() - t0
    with open(out / "receipts.jsonl", "w") as f:
        for r in results:
            f.write(r.model_dump_json() + "\n")
    columns = ["source", "receipt_id", "status", "reason", *scalar_fields()]
    with open(out / "receipts.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            row = {"source": r.source, "receipt_id": r.receipt_id, "status": r.status, "reason": r.reason}
            if r.receipt is not None:
                row.update(r.receipt.model_dump(include=set(scalar_fields()), mode="json"))
            writer.writerow(row)
    ok = sum(r.status == "ok" for r in results)
    summary = {"receipts": len(results), "ok": ok, "failed": len(results) - ok,
               "seconds": round(elapsed, 2), "receipts_per_s": round(len(results) / elapsed, 3),
               "extractor_version": backend.version, "output": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table([summary], list(summary), title="batch summary")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    path = Path(args.image)
    item = ReceiptInput.from_bytes(path.read_bytes(), str(path))
    rows = {}
    for label, model in (("a", args.model_a), ("b", args.model_b)):
        [result] = _backend(model, None, args.cache_dir).extract([item])
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

    from extractor.evaluation import evaluate

    backend = _backend(args.model, args.model_dir, args.cache_dir)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with Progress(transient=True) as progress:
        task = progress.add_task("evaluating", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = evaluate(backend, args.dataset, limit=args.limit, progress=tick)
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


def cmd_presets(args: argparse.Namespace) -> int:
    rows = [{"preset": name, **resolve_spec(name).model_dump(include={"backend", "model_id", "revision",
                                                                        "batch_size", "max_new_tokens"}),
             "version": resolve_spec(name).version} for name in PRESETS]
    _print_table(rows, list(rows[0]), title="extractor presets")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m extractor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        if model:
            p.add_argument("--model", default="ocr", help="preset name or JSON spec (default: ocr)")
            p.add_argument("--model-dir", help="load the model from this local folder")
        p.add_argument("--cache-dir", help="model cache (default: $RECEIPT_MODEL_CACHE or ./var/models)")

    p = sub.add_parser("extract", help="extract one receipt and print its JSON record")
    p.add_argument("image")
    common(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("batch", help="extract a folder of receipts to JSONL and CSV")
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

    p = sub.add_parser("eval", help="per-field accuracy against labels in the sroie-dev format")
    p.add_argument("--dataset", required=True, help="folder with images/ and labels/")
    p.add_argument("--output-dir", default="var/eval")
    p.add_argument("--limit", type=int)
    common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export-labels", help="reviewed receipts as an eval dataset (images/ + labels/)")
    p.add_argument("--warehouse", required=True, help="duckdb:///path or postgresql://... URL")
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_export_labels)

    p = sub.add_parser("presets", help="list the model presets")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
