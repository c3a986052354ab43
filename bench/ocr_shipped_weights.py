"""The shipped picker weights on OCR caches, first read only: what a preset that runs other
OCR settings with the same weights gives (in-sample on sroie-dev: the weights were trained
on it), paired on the same receipts. Scores: exact with punctuation read as a space, near.

    python bench/ocr_shipped_weights.py --dataset ../shared/datasets/sroie-dev \\
        /work/scratch-ocr/cache/prod /work/scratch-ocr/cache/fast-latin-w160
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from extractor.ocr.picker import load_default_picker
    from extractor.ocr.train_picker import load_examples, predict, score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("caches", type=Path, nargs="+")
    args = ap.parse_args(argv)
    picker = load_default_picker()
    for cache in args.caches:
        examples = load_examples(cache, args.dataset)
        fields = score(examples, predict(examples, picker), "shipped weights, first read").to_dict()["fields"]
        print(cache.name, len(examples), json.dumps({
            k: {"exact_punctuation_as_space": round(100 * v["exact_punctuation_as_space"], 1),
                "near": round(100 * v["near"], 1)} for k, v in fields.items()}))


if __name__ == "__main__":
    main()
