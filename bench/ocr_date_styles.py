"""The ``ocr`` backend end to end on synthetic receipts whose date line is printed three ways.

Twelve receipts per style, one per month (``extractor.testing.synthetic``, ``date_style``):
``DATE: 07/03/2018``, ``DATE: 07 MAR 2018`` and the Malay ``TARIKH: 07 MAC 2018``. Prints how
many dates the backend reads right per style, and which it misses.

    .venv/bin/python bench/ocr_date_styles.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from extractor import ocr  # noqa: E402
from extractor.backends.ocr import OCRBackend  # noqa: E402
from extractor.images import ReceiptInput  # noqa: E402
from extractor.spec import resolve_spec  # noqa: E402
from extractor.testing.synthetic import render_receipt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    backend = OCRBackend(resolve_spec("ocr"))
    out = {"parser": ocr.PARSER_VERSION, "styles": {}}
    for style in ("dmy", "english", "malay"):
        rendered = [render_receipt(100 + m, date=f"2018-{m:02d}-{(m * 2) % 27 + 1:02d}", date_style=style)
                    for m in range(1, 13)]
        items = [ReceiptInput.from_bytes(data, f"{style}-{i}") for i, (data, _) in enumerate(rendered)]
        results = backend.extract(items)
        missed = []
        for result, (_, truth) in zip(results, rendered, strict=True):
            got = result.receipt.date.isoformat() if result.status == "ok" and result.receipt.date else None
            if got != truth["date"]:
                missed.append({"truth": truth["date"], "read": got})
        out["styles"][style] = {"receipts": len(rendered), "dates_right": len(rendered) - len(missed), "missed": missed}
        print(f"{style}: {len(rendered) - len(missed)} / {len(rendered)} dates right; missed {missed}", flush=True)
    backend.close()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
