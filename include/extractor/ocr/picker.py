"""The learned line picker: which candidate is the store name, address, date and total.

Each field has a small scorer (a one-hidden-layer network plus a linear skip term,
inference in numpy) over the candidate features of ``extractor.ocr.features``; the
candidates of one receipt compete through a softmax, so the winner's probability is a
confidence. Weights are trained on the sroie-dev labels by ``extractor.ocr.train_picker``
and shipped as ``picker_weights.json`` beside this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from extractor.evaluation import normalize_text
from extractor.ocr import features
from extractor.ocr.layout import Line
from extractor.ocr.parser import Candidate

WEIGHTS_PATH = Path(__file__).with_name("picker_weights.json")
FIELDS = ("store_name", "store_address", "date", "total")


@dataclass
class Scorer:
    """score(x) = w2 . tanh(W1 z + b1) + wl . z, with z the standardised features."""

    names: list[str]
    mean: Any
    std: Any
    W1: Any
    b1: Any
    w2: Any
    wl: Any

    def matrix(self, feats: Sequence[dict[str, float]]):
        import numpy as np

        index = {n: k for k, n in enumerate(self.names)}
        X = np.zeros((len(feats), len(self.names)))
        for r, f in enumerate(feats):
            for key, value in f.items():
                k = index.get(key)
                if k is not None:
                    X[r, k] = value
        return (X - self.mean) / self.std

    def scores(self, feats: Sequence[dict[str, float]]):
        import numpy as np

        Z = self.matrix(feats)
        return np.tanh(Z @ self.W1 + self.b1) @ self.w2 + Z @ self.wl

    def to_dict(self) -> dict[str, Any]:
        import numpy as np

        return {"names": self.names, **{k: np.round(np.asarray(getattr(self, k), dtype=float), 6).tolist()
                                        for k in ("mean", "std", "W1", "b1", "w2", "wl")}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scorer:
        import numpy as np

        return cls(names=list(d["names"]), **{k: np.asarray(d[k], dtype=float)
                                              for k in ("mean", "std", "W1", "b1", "w2", "wl")})


def softmax(scores):
    import numpy as np

    e = np.exp(scores - scores.max())
    return e / e.sum()


def _value_key(value: Any) -> Any:
    """What makes two candidates the same answer: the text as scored (case, punctuation and
    spacing aside), or the date or amount itself."""
    return normalize_text(value) if isinstance(value, str) else value


def best(scorer: Scorer, cands: Sequence[Candidate], decode: str = "candidate") -> tuple[Candidate | None, float]:
    """The chosen candidate and its probability.

    ``decode="candidate"``: the highest-scoring candidate and its own softmax probability.
    ``"value-confidence"``: the same candidate, with the probability of its *value*: the sum
    over every candidate that gives the same answer (a store name found as a one-line span,
    a two-line span ending in an empty line and a trimmed variant; a total printed on the
    SUBTOTAL and the TOTAL lines), which split the mass between them. ``"value"``: the value
    with the most mass, through its highest-scoring candidate, and that mass."""
    if not cands:
        return None, 0.0
    p = softmax(scorer.scores([c.extra["features"] for c in cands]))
    k = int(p.argmax())
    if decode == "candidate":
        return cands[k], float(p[k])
    mass: dict[Any, float] = {}
    for cand, prob in zip(cands, p, strict=True):
        mass[_value_key(cand.value)] = mass.get(_value_key(cand.value), 0.0) + float(prob)
    if decode == "value":
        top = max(mass, key=mass.__getitem__)
        k = max((i for i, c in enumerate(cands) if _value_key(c.value) == top), key=lambda i: p[i])
    return cands[k], min(1.0, mass[_value_key(cands[k].value)])


class LinePicker:
    """Picks store name, address, date and total from a receipt's lines."""

    #: how a field's answer and its confidence are read from the scores (``best``'s ``decode``)
    decode = "value-confidence"

    def __init__(self, scorers: dict[str, Scorer], meta: dict[str, Any] | None = None):
        missing = set(FIELDS) - set(scorers)
        if missing:
            raise ValueError(f"picker weights lack scorers for {sorted(missing)}")
        self.scorers = scorers
        self.meta = meta or {}

    def pick(self, lines: Sequence[Line], dates: Sequence[Candidate],
             totals: Sequence[Candidate]) -> dict[str, tuple[Candidate | None, float]]:
        page = features.Page.of(lines)
        companies = features.offered_companies(page, features.company_candidates(page))
        company, p_company = best(self.scorers["store_name"], companies, self.decode)
        company_lines = company.extra["lines"] if company is not None else []
        address, p_address = best(self.scorers["store_address"],
                                  features.offered_addresses(features.address_candidates(page, company_lines)),
                                  self.decode)
        features.date_features(page, dates)
        features.total_features(page, totals)
        return {"store_name": (company, p_company), "store_address": (address, p_address),
                "date": best(self.scorers["date"], dates, self.decode),
                "total": best(self.scorers["total"], features.offered_totals(page, totals), self.decode)}

    def to_json(self) -> str:
        return json.dumps({"meta": self.meta, "scorers": {k: s.to_dict() for k, s in self.scorers.items()}})

    @classmethod
    def from_json(cls, text: str) -> LinePicker:
        d = json.loads(text)
        return cls({k: Scorer.from_dict(v) for k, v in d["scorers"].items()}, d.get("meta"))


@lru_cache(maxsize=1)
def load_default_picker() -> LinePicker | None:
    """The picker shipped with the package, or None when no weights are bundled."""
    if not WEIGHTS_PATH.exists():
        return None
    return LinePicker.from_json(WEIGHTS_PATH.read_text())
