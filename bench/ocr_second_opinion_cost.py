"""CPU per receipt of the OCR backend with and without the second opinion (re-reads).

One process per setting, the backend as ``batch`` builds it, the receipts of a folder in
batches of 8. Unlike ``bench/ocr_second_opinion.py`` (the re-reads alone, on an OCR cache
of the dataset), this runs detection and recognition too and needs no cache:

    OMP_NUM_THREADS=1 PYTHONPATH=include python bench/ocr_second_opinion_cost.py IN40 on
    OMP_NUM_THREADS=1 PYTHONPATH=include python bench/ocr_second_opinion_cost.py IN40 off
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from extractor.backends.ocr import OCRBackend
from extractor.images import ReceiptInput
from extractor.spec import resolve_spec


def main(folder: str, setting: str) -> None:
    images = sorted(Path(folder).iterdir())
    backend = OCRBackend(resolve_spec("ocr"), **({} if setting == "on" else {"second_opinion": None}))
    cpu0, wall0 = time.process_time(), time.time()
    for i in range(0, len(images), 8):
        backend.extract([ReceiptInput(p.stem, str(p), p.read_bytes()) for p in images[i:i + 8]])
    print(f"second opinion {setting}: {len(images)} receipts, "
          f"{(time.process_time() - cpu0) / len(images):.3f} CPU-s per receipt, {time.time() - wall0:.1f} s wall")
    backend.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
