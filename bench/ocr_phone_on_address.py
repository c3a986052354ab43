"""Addresses whose last line runs on into the phone number, read end to end.

Renders receipts (``extractor.testing.synthetic``, ``phone_on_address=True``: the phone printed after
the address and wrapped with it, ``... 47100 PUCHONG TEL: 03-5907 2760``) and reads them with the
real ``ocr`` backend; counts the addresses that come back whole (similarity >= 0.9 to the truth) and
without the phone. ``--offer-all`` offers the picker every address span, as parser-v8 did:

    python bench/ocr_phone_on_address.py [--n 12] [--offer-all]
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    from extractor.backends.ocr import OCRBackend
    from extractor.evaluation import similarity
    from extractor.images import ReceiptInput
    from extractor.ocr import PARSER_VERSION, features
    from extractor.spec import resolve_spec
    from extractor.testing.synthetic import render_receipt

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--offer-all", action="store_true")
    args = ap.parse_args(argv)
    if args.offer_all:
        features.offered_addresses = list
    backend = OCRBackend(resolve_spec("ocr"))
    try:
        rendered = [render_receipt(seed, phone_on_address=True) for seed in range(200, 200 + args.n)]
        results = backend.extract([ReceiptInput.from_bytes(data, f"phone-{i}") for i, (data, _) in enumerate(rendered)])
    finally:
        backend.close()
    rows = [{"address": r.receipt.store_address if r.receipt else None, "truth": t["store_address"]}
            for r, (_, t) in zip(results, rendered, strict=True)]
    for row in rows:
        got = row["address"] or ""
        row["with_phone"] = "TEL" in got.upper()
        row["whole"] = similarity(got, row["truth"]) >= 0.9 and not row["with_phone"]
    print(json.dumps({"parser": PARSER_VERSION + (", every span offered" if args.offer_all else ""),
                      "receipts": len(rows), "whole": sum(r["whole"] for r in rows),
                      "with_phone": sum(r["with_phone"] for r in rows), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
