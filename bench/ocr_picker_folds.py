"""How much the date and total cross-validation depends on the fold split.

The full table (``bench/ocr_accuracy.py table``) uses one fold split. With repeat stores,
the unseen-store CV moves by several points with the split (a fold that holds the
largest stores together), so this fits only the date and total scorers (seconds each)
for several splits and prints the accuracy per split and the mean:

    python bench/ocr_picker_folds.py --dataset ../shared/datasets/sroie-dev \\
        --cache /work/scratch-ocr/cache/det1280 [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _sets(example):
    import numpy as np

    from extractor.ocr import features
    from extractor.ocr.parser import date_candidates, total_candidates

    page = features.Page.of(example.lines)
    dates, totals = date_candidates(example.lines), total_candidates(example.lines)
    features.date_features(page, dates)
    features.total_features(page, totals)
    want_date, want_total = example.label.get("date_iso"), example.label.get("total_decimal")
    return {"date": (dates, np.array([c.value.isoformat() == want_date for c in dates], bool)),
            "total": (totals, np.array([want_total not in (None, "") and str(c.value) == str(want_total)
                                        for c in totals], bool))}


def accuracy(examples, sets, field: str, *, by_store: bool, seed: int, folds: int = 5, members: int = 1) -> float:
    """Share of receipts whose picked candidate is right, each read by a scorer trained
    on the other folds (folds drawn as in ``train_picker.cross_validate``)."""
    import numpy as np

    from extractor.evaluation import normalize_text
    from extractor.ocr.picker import best
    from extractor.ocr.train_picker import fit_scorer

    key = [(normalize_text(ex.label.get("company") or "") or ex.group) if by_store else ex.group
           for ex in examples]
    groups = sorted(set(key))
    fold_of = {g: int(f) for g, f in zip(np.random.default_rng(seed).permutation(groups),
                                         np.arange(len(groups)) % folds, strict=True)}
    right = 0
    for k in range(folds):
        train = [sets[i][field] for i in range(len(examples)) if fold_of[key[i]] != k]
        scorer = fit_scorer([([c.extra["features"] for c in cands], pos) for cands, pos in train], members=members)
        for i in range(len(examples)):
            if fold_of[key[i]] == k:
                cands, pos = sets[i][field]
                picked, _ = best(scorer, cands)
                right += picked is not None and bool(pos[cands.index(picked)])
    return right / len(examples)


def main(argv: list[str] | None = None) -> None:
    from extractor.ocr.train_picker import load_examples

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--members", type=int, default=1, help="networks per scorer, scores averaged (fit_scorer)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    examples = load_examples(args.cache, args.dataset)
    sets = [_sets(ex) for ex in examples]
    report = {"members": args.members}
    for field in ("date", "total"):
        for by_store in (False, True):
            name = f"{field}, {'unseen stores' if by_store else 'cv'}"
            per_seed = [round(100 * accuracy(examples, sets, field, by_store=by_store, seed=s,
                                                 members=args.members), 1)
                        for s in args.seeds]
            report[name] = {"seeds": args.seeds, "accuracy": per_seed,
                            "mean": round(sum(per_seed) / len(per_seed), 2)}
            print(f"{name}: {per_seed} mean {report[name]['mean']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
