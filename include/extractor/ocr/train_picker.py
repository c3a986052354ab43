"""Train the line picker on cached OCR output of a labelled set, and measure it honestly.

    python -m extractor.ocr.train_picker --cache DIR --dataset /path/to/sroie-dev \\
        [--folds 5] [--out include/extractor/ocr/picker_weights.json] [--report out.json]

``--cache`` holds one JSON per receipt with the raw OCR boxes (written once by
``bench/ocr_accuracy.py ocr``), so training and evaluation take seconds. Accuracy is
reported three ways: the naive rules, k-fold cross-validation (each receipt predicted
by a picker that never saw it; receipts with identical images share a fold), and
in-sample (the shipped picker, trained on everything). numpy only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractor.evaluation import FIELDS as LABEL_KEYS
from extractor.evaluation import EvalReport, normalize_text
from extractor.ocr import features
from extractor.ocr.engine import OcrBox
from extractor.ocr.layout import MIN_BOX_SCORE, Line, rebuild_lines
from extractor.ocr.lexicon import correct_text
from extractor.ocr.parser import date_candidates, parse_receipt, total_candidates
from extractor.ocr.picker import FIELDS, LinePicker, Scorer
from extractor.ocr.second_opinion import SecondOpinionSettings, cached_reader


@dataclass
class SecondOpinion:
    """Re-reads for the bench: the recogniser's readings of doubtful boxes, cached per
    receipt in ``cache_dir`` (the image is opened only for boxes not read before)."""

    settings: SecondOpinionSettings
    cache_dir: Path
    dataset_dir: Path
    kind: str = "rapid"
    ocr_settings: Any = None  # the OCR cache's OcrSettings: re-read by the recogniser that made the cache
    _engine: Any = None
    counts: dict[str, int] = field(default_factory=lambda: {"receipts": 0, "boxes": 0})

    def reader(self, ex: Example):
        def make():
            from PIL import Image

            from extractor.ocr import second_opinion as so

            image = Image.open(self.dataset_dir / "images" / f"{ex.receipt_id}.jpg").convert("RGB")
            if self.kind == "tesseract":
                return so.tesseract_reader(image, self.settings.margin)
            if self._engine is None:
                from extractor.ocr.engine import build_engine

                self._engine = build_engine(self.ocr_settings)
            return so.rapid_reader(self._engine, image, self.settings.margin)

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        cached = cached_reader(make, self.cache_dir / f"{ex.receipt_id}.json")

        def counting(boxes):  # how many receipts and boxes the second opinion read (its CPU)
            self.counts["receipts"] += 1
            self.counts["boxes"] += len(boxes)
            return cached(boxes)

        return counting


@dataclass
class Example:
    receipt_id: str
    lines: list[Line]
    label: dict[str, Any]
    group: str  # identical images share a group (and a fold)


def load_examples(cache_dir: Path, dataset_dir: Path) -> list[Example]:
    out = []
    for path in sorted(cache_dir.glob("*.json")):
        if path.name.startswith("_"):
            continue
        d = json.loads(path.read_text())
        label = json.loads((dataset_dir / "labels" / f"{d['id']}.json").read_text())
        image = dataset_dir / label.get("image", f"images/{d['id']}.jpg")
        boxes = [OcrBox.from_dict(b) for b in d["boxes"]]
        out.append(Example(d["id"], rebuild_lines(boxes, min_score=MIN_BOX_SCORE), label,
                           hashlib.sha256(image.read_bytes()).hexdigest()))
    return out


# --- training data: candidates, features and which ones are right -------------------
def _text_targets(cands, label: str, store_name: bool = False) -> np.ndarray:
    """Candidates that match the label exactly (normalised), else the most similar
    ones if they are near (>= 0.8); none when the label is not on the page."""
    want = normalize_text(label)
    exact = np.array([normalize_text(correct_text(c.value, store_name=store_name)) == want for c in cands])
    if exact.any() or not want:
        return exact
    sims = np.array([_similar(normalize_text(correct_text(c.value, store_name=store_name)), want)
                     for c in cands])
    return (sims >= max(0.8, sims.max() - 1e-9)) if len(sims) else exact


def _similar(a: str, b: str) -> float:
    """difflib ratio, skipping the slow exact computation when the cheap bound is < 0.8."""
    from difflib import SequenceMatcher

    if 2 * min(len(a), len(b)) / max(len(a) + len(b), 1) < 0.8:
        return 0.0
    sm = SequenceMatcher(None, a, b, autojunk=False)
    return sm.ratio() if sm.quick_ratio() >= 0.8 else 0.0


def field_sets(ex: Example, company_lines: list[int] | None = None):
    """{field: (feature dicts, positive mask)} for one receipt."""
    if not ex.lines:
        return {}
    page = features.Page.of(ex.lines)
    out = {}
    comp = features.company_candidates(page)
    comp_pos = _text_targets(comp, ex.label.get("company") or "", store_name=True)
    out["store_name"] = ([c.extra["features"] for c in comp], comp_pos)
    if company_lines is None:
        company_lines = comp[int(np.argmax(comp_pos))].extra["lines"] if comp_pos.any() else []
    addr = features.address_candidates(page, company_lines)
    out["store_address"] = ([c.extra["features"] for c in addr],
                            _text_targets(addr, ex.label.get("address") or ""))
    dates = date_candidates(ex.lines)
    features.date_features(page, dates)
    want = ex.label.get("date_iso")
    out["date"] = ([c.extra["features"] for c in dates],
                   np.array([c.value.isoformat() == want for c in dates], dtype=bool))
    totals = total_candidates(ex.lines)
    features.total_features(page, totals)
    want_total = ex.label.get("total_decimal")
    out["total"] = ([c.extra["features"] for c in totals],
                    np.array([want_total not in (None, "") and str(c.value) == str(want_total)
                              for c in totals], dtype=bool))
    return out


# --- the model: segment softmax over each receipt's candidates ---------------------------
def fit_scorer(groups: list[tuple[list[dict], np.ndarray]], *, hidden: int = 16, epochs: int = 200,
               lr: float = 0.05, l2: float = 1e-3, seed: int = 0, members: int = 1) -> Scorer:
    """Maximise log P(a right candidate) under a per-receipt softmax (full-batch Adam).
    ``members`` > 1: that many networks from seeds ``seed``, ``seed + 1``, ..., their scores
    averaged, stored as one scorer with ``members * hidden`` hidden units."""
    if members > 1:
        return merge_scorers([fit_scorer(groups, hidden=hidden, epochs=epochs, lr=lr, l2=l2, seed=seed + i)
                              for i in range(members)])
    groups = [(f, pos) for f, pos in groups if len(f) and pos.any()]
    names = sorted({k for f, _ in groups for d in f for k in d})
    index = {n: k for k, n in enumerate(names)}
    rows = [d for f, _ in groups for d in f]
    X = np.zeros((len(rows), len(names)), dtype=np.float32)
    for r, d in enumerate(rows):
        for k, v in d.items():
            X[r, index[k]] = v
    seg = np.concatenate([np.full(len(f), g) for g, (f, _) in enumerate(groups)])
    pos = np.concatenate([p for _, p in groups]).astype(float)
    starts = np.concatenate([[0], np.cumsum([len(f) for f, _ in groups])[:-1]])
    mean, std = X.mean(0), X.std(0)
    std[std < 1e-6] = 1.0
    Z = ((X - mean) / std).astype(np.float32)
    rng = np.random.default_rng(seed)
    params = {"W1": rng.normal(0, 0.1, (len(names), hidden)).astype(np.float32),
              "b1": np.zeros(hidden, np.float32), "w2": rng.normal(0, 0.1, hidden).astype(np.float32),
              "wl": np.zeros(len(names), np.float32)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    for t in range(1, epochs + 1):
        H = np.tanh(Z @ params["W1"] + params["b1"])
        s = H @ params["w2"] + Z @ params["wl"]
        smax = np.maximum.reduceat(s, starts)[seg]
        e = np.exp(s - smax)
        p = e / np.add.reduceat(e, starts)[seg]
        ep = e * pos
        q = ep / np.add.reduceat(ep, starts)[seg]
        ds = (p - q) / len(groups)
        grads = {"w2": H.T @ ds, "wl": Z.T @ ds}
        dH = np.outer(ds, params["w2"]) * (1 - H ** 2)
        grads["W1"], grads["b1"] = Z.T @ dH, dH.sum(0)
        for k in params:
            g = grads[k] + l2 * params[k]
            m[k] = 0.9 * m[k] + 0.1 * g
            v2[k] = 0.999 * v2[k] + 0.001 * g * g
            params[k] -= lr * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v2[k] / (1 - 0.999 ** t)) + 1e-8)
    return Scorer(names=names, mean=mean, std=std, **params)


def merge_scorers(scorers: list[Scorer]) -> Scorer:
    """One scorer whose score is the mean of ``scorers``' (same features and standardisation,
    as fitted on the same data): the hidden layers side by side, the output weights averaged."""
    first, k = scorers[0], len(scorers)
    for s in scorers[1:]:
        if s.names != first.names or not (np.array_equal(s.mean, first.mean) and np.array_equal(s.std, first.std)):
            raise ValueError("scorers to merge must share their features and standardisation")
    return Scorer(names=first.names, mean=first.mean, std=first.std,
                  W1=np.concatenate([s.W1 for s in scorers], axis=1), b1=np.concatenate([s.b1 for s in scorers]),
                  w2=np.concatenate([s.w2 for s in scorers]) / k, wl=sum(s.wl for s in scorers) / k)


def train(examples: list[Example], sets: list[dict] | None = None, **kw) -> LinePicker:
    sets = sets if sets is not None else [field_sets(ex) for ex in examples]
    scorers = {name: fit_scorer([s[name] for s in sets if name in s], **kw) for name in FIELDS}
    return LinePicker(scorers, meta={"trained_on": len(examples)})


# --- evaluation ---------------------------------------------------------------------------
def predict(examples: list[Example], picker: LinePicker | None,
            second_opinion: SecondOpinion | None = None) -> dict[str, dict[str, Any]]:
    out = {}
    for ex in examples:
        reader = second_opinion.reader(ex) if second_opinion is not None and picker is not None else None
        parsed = parse_receipt(ex.lines, picker=picker, reader=reader,
                               second_opinion=second_opinion.settings if reader is not None else None)
        out[ex.receipt_id] = {key: parsed.values.get(attr) for key, attr in LABEL_KEYS.items()}
        out[ex.receipt_id]["confidence"] = {key: parsed.confidence[attr] for key, attr in LABEL_KEYS.items()
                                            if attr in parsed.confidence}
    return out


def score(examples: list[Example], predictions: dict[str, dict[str, Any]], model: str) -> EvalReport:
    report = EvalReport(model=model, dataset="sroie-dev")
    for ex in examples:
        report.add(ex.receipt_id, predictions[ex.receipt_id], ex.label,
                   confidence=predictions[ex.receipt_id].get("confidence"))
    return report


def cross_validate(examples: list[Example], folds: int = 5, seed: int = 0,
                   sets: list[dict] | None = None, *, by_store: bool = False,
                   second_opinions: dict[str, SecondOpinion | None] | None = None, **kw) -> dict[str, EvalReport]:
    """k-fold CV. Receipts with identical images share a fold; with ``by_store`` all
    receipts of one store (same normalised company label) do, so every receipt is read
    by a picker that never saw its store: the number for merchants new to the model.
    One report per entry of ``second_opinions`` (name -> re-reads or None), all from the
    same fold pickers; by default one report, without re-reads, under the name ""."""
    sets = sets if sets is not None else [field_sets(ex) for ex in examples]
    variants = second_opinions if second_opinions is not None else {"": None}
    key = {ex.receipt_id: ((normalize_text(ex.label.get("company") or "") or ex.group) if by_store
                           else ex.group)
           for ex in examples}
    groups = sorted(set(key.values()))
    rng = np.random.default_rng(seed)
    fold_of = {g: int(f)
               for g, f in zip(rng.permutation(groups), np.arange(len(groups)) % folds, strict=True)}
    predictions: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in variants}
    for k in range(folds):
        train_idx = [i for i, ex in enumerate(examples) if fold_of[key[ex.receipt_id]] != k]
        held_out = [ex for ex in examples if fold_of[key[ex.receipt_id]] == k]
        picker = train([examples[i] for i in train_idx], [sets[i] for i in train_idx], **kw)
        for name, second_opinion in variants.items():
            predictions[name].update(predict(held_out, picker, second_opinion))
    model = f"picker, {folds}-fold CV" + (", unseen stores" if by_store else "")
    return {name: score(examples, predictions[name], model + (f", {name}" if name else "")) for name in variants}


def ceiling(examples: list[Example], punctuation: str = "") -> dict[str, float]:
    """Share of receipts whose label is in the OCR text at all (normalised substring)."""
    hits = {k: 0 for k in LABEL_KEYS}
    for ex in examples:
        text = normalize_text(" ".join(ln.text for ln in ex.lines), punctuation)
        for key in LABEL_KEYS:
            want = normalize_text(ex.label.get(key) or "", punctuation)
            hits[key] += bool(want) and want in text
    return {k: round(v / len(examples), 4) for k, v in hits.items()}


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the picker trained on everything here")
    ap.add_argument("--report", type=Path, help="write the JSON report (all tables) here")
    ap.add_argument("--store-cv", action="store_true",
                    help="also cross-validate with every store's receipts in one fold (unseen stores)")
    ap.add_argument("--second-opinion", choices=["off", "rapid", "tesseract"], default="rapid",
                    help="re-read doubtful store names and addresses (the backend's default: rapid); "
                         "the rows without it are reported too")
    ap.add_argument("--reread-cache", type=Path,
                    help="where the re-reads are cached (default: CACHE-reread-KIND beside the OCR cache)")
    ap.add_argument("--limit", type=int, help="only the first N receipts of the cache (name order)")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=200)
    return ap.parse_args(argv)


def _variants(args: argparse.Namespace) -> dict[str, SecondOpinion | None]:
    """The report's names for the shipped reading and, with a second opinion, the first read alone."""
    if args.second_opinion == "off":
        return {"": None}
    cache = args.reread_cache or args.cache.with_name(f"{args.cache.name}-reread-{args.second_opinion}")
    more = SecondOpinionSettings(min_probability=0.9, min_box_score=0.97)
    ocr = cache_settings(args.cache)
    return {"": SecondOpinion(SecondOpinionSettings(), cache, args.dataset, args.second_opinion, ocr),
            "first read only": None,
            f"re-read more (p < {more.min_probability}, box < {more.min_box_score})":
                SecondOpinion(more, cache, args.dataset, args.second_opinion, ocr)}


def cache_settings(cache: Path):
    """The recogniser settings an OCR cache was made with (``_settings.json``; the defaults where
    it has none), so that re-reads use the same model head and widths as the first read."""
    from dataclasses import fields

    from extractor.ocr.engine import OcrSettings

    meta = cache / "_settings.json"
    saved = json.loads(meta.read_text()) if meta.exists() else {}
    known = {f.name for f in fields(OcrSettings)}
    return OcrSettings(**{k: v for k, v in saved.items() if k in known})


def _take_counts(protocol: str, variants: dict[str, SecondOpinion | None]) -> dict[str, dict[str, int]]:
    out = {}
    for name, second_opinion in variants.items():
        if second_opinion is not None:
            out[protocol + (f", {name}" if name else "")] = dict(second_opinion.counts)
            second_opinion.counts.update(receipts=0, boxes=0)
    return out


def _print_table(examples: list[Example], reports: dict[str, EvalReport]) -> None:
    print(f"{len(examples)} receipts; label present in OCR text: {ceiling(examples)}; "
          f"with punctuation as space: {ceiling(examples, ' ')}")
    print("| method | " + " | ".join(f"{k} exact | {k} near" for k in LABEL_KEYS)
          + " | company exact, punct. as space | address exact, punct. as space |")
    print("| --- |" + " ---: |" * (2 * len(LABEL_KEYS) + 2))
    for name, rep in reports.items():
        cells = " | ".join(f"{100 * s.rate('exact'):.1f} | {100 * s.rate('near'):.1f}"
                           for s in rep.fields.values())
        loose = " | ".join(f"{100 * rep.fields[k].rate('loose'):.1f}" for k in ("company", "address"))
        print(f"| {name} | {cells} | {loose} |")


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    examples = load_examples(args.cache, args.dataset)[:args.limit]
    kw = {"hidden": args.hidden, "epochs": args.epochs}
    variants = _variants(args)
    reports = {"naive rules": score(examples, predict(examples, None), "naive rules")}
    t0 = time.perf_counter()
    sets = [field_sets(ex) for ex in examples]
    print(f"features: {time.perf_counter() - t0:.1f} s", flush=True)
    protocols = {"cv": False, "cv, unseen stores": True} if args.folds > 1 else {}
    reread: dict[str, dict[str, int]] = {}
    for protocol, by_store in protocols.items():
        if by_store and not args.store_cv:
            continue
        for name, rep in cross_validate(examples, args.folds, sets=sets, by_store=by_store,
                                        second_opinions=variants, **kw).items():
            reports[protocol + (f", {name}" if name else "")] = rep
        reread.update(_take_counts(protocol, variants))
        print(f"{protocol} done: {time.perf_counter() - t0:.1f} s", flush=True)
    picker = train(examples, sets, **kw)
    for name, second_opinion in variants.items():
        reports["in-sample" + (f", {name}" if name else "")] = score(
            examples, predict(examples, picker, second_opinion), "picker, in-sample" + (f", {name}" if name else ""))
    reread.update(_take_counts("in-sample", variants))
    _print_table(examples, reports)
    print(f"re-read (receipts, boxes of {len(examples)} receipts): {json.dumps(reread)}")
    if args.out:
        picker.meta.update({"folds": args.folds, **kw})
        args.out.write_text(picker.to_json())
        print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({**{k: r.to_dict() for k, r in reports.items()},
                                           "second opinion re-reads": reread}, indent=1, default=str))


if __name__ == "__main__":
    main()
