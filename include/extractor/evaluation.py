"""Field accuracy of a backend on a labelled receipt set (the sroie-dev format).

Scoring follows the SROIE task-3 habit: a field is right when it matches the label
after normalisation (upper case, whitespace collapsed, punctuation dropped; dates and
totals compared as values). Because company and address labels are often not verbatim
on the receipt, a "near" score (character similarity >= 0.9) is reported beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from extractor import normalize
from extractor.errors import ConfigError, NormalizationError

# label key in the dataset -> Receipt field
FIELDS = {"company": "store_name", "address": "store_address", "date": "date", "total": "total"}
NEAR_THRESHOLD = 0.9
_PUNCT = re.compile(r"[^\w\s]|_")


def normalize_text(value: Any, punctuation: str = "") -> str:
    """Upper case, punctuation dropped, whitespace collapsed ('No.5, Jln  2' -> 'NO5 JLN 2').

    ``punctuation=" "`` replaces punctuation by a space instead ('NO 5 JLN 2'): the
    secondary "loose" score, blind to the spacing around punctuation ('27,JALAN' vs
    '27, JALAN'), which the recogniser and the annotators both get wrong often."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFKC", str(value)).upper()
    return " ".join(_PUNCT.sub(punctuation, text).split())


def similarity(a: Any, b: Any) -> float:
    """Character similarity of the normalised strings (difflib ratio, 0..1)."""
    na, nb = normalize_text(a), normalize_text(b)
    if not na and not nb:
        return 1.0
    return SequenceMatcher(None, na, nb, autojunk=False).ratio()


def _as_date(value: Any) -> dt.date | None:
    try:
        return normalize.parse_date(value) if value not in (None, "") else None
    except NormalizationError:
        return None


def _as_amount(value: Any) -> Decimal | None:
    if isinstance(value, str):  # labels carry the currency glued on: "RM5.00"
        value = re.sub(r"^\s*(?:RM|MYR|\$)\s*", "", value.upper())
    try:
        return normalize.parse_money(value) if value not in (None, "") else None
    except (NormalizationError, InvalidOperation):
        return None


def field_match(name: str, predicted: Any, label: Any) -> tuple[bool, bool]:
    """(exact, near) for one field; ``name`` is a dataset key (company/address/date/total)."""
    if name == "date":
        got, want = _as_date(predicted), _as_date(label)
        ok = got is not None and got == want
        return ok, ok
    if name == "total":
        got, want = _as_amount(predicted), _as_amount(label)
        ok = got is not None and want is not None and got == want
        return ok, ok
    exact = normalize_text(predicted) == normalize_text(label) and normalize_text(label) != ""
    near = exact or (bool(normalize_text(predicted)) and similarity(predicted, label) >= NEAR_THRESHOLD)
    return exact, near


def label_value(label: dict[str, Any], key: str) -> Any:
    """The label to score against: the normalised ``date_iso`` / ``total_decimal`` where
    the dataset gives them (raw labels include '20180304' and 'RM5.00'), else the raw one."""
    normalised = {"date": "date_iso", "total": "total_decimal"}.get(key)
    if normalised and label.get(normalised) not in (None, ""):
        return label[normalised]
    return label.get(key)


def loose_match(name: str, predicted: Any, label: Any) -> bool:
    """Exact match with punctuation read as a space (dates and totals: as ``field_match``)."""
    if name in ("date", "total"):
        return field_match(name, predicted, label)[0]
    want = normalize_text(label, " ")
    return bool(want) and normalize_text(predicted, " ") == want


@dataclass
class FieldScore:
    exact: int = 0
    near: int = 0
    n: int = 0
    loose: int = 0

    def rate(self, kind: str) -> float:
        return getattr(self, kind) / self.n if self.n else 0.0


@dataclass
class EvalReport:
    """Per-field accuracy plus per-receipt rows (for error analysis) and timings."""

    model: str
    dataset: str
    n: int = 0
    failed: int = 0
    seconds: float = 0.0
    fields: dict[str, FieldScore] = field(default_factory=lambda: {k: FieldScore() for k in FIELDS})
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, receipt_id: str, predicted: dict[str, Any], label: dict[str, Any],
            reason: str | None = None, confidence: dict[str, float] | None = None) -> None:
        """Score one receipt; ``confidence`` (the dataset's keys -> the backend's per-field
        confidence, where it gives one) is kept in the row, for judging review routing."""
        self.n += 1
        self.failed += reason is not None
        row: dict[str, Any] = {"id": receipt_id, "reason": reason}
        for key in FIELDS:
            exact, near = field_match(key, predicted.get(key), label_value(label, key))
            score = self.fields[key]
            score.n += 1
            score.exact += exact
            score.near += near
            score.loose += loose_match(key, predicted.get(key), label_value(label, key))
            row[key] = {"predicted": None if predicted.get(key) is None else str(predicted.get(key)),
                        "label": label.get(key), "exact": exact, "near": near}
            if confidence and confidence.get(key) is not None:
                row[key]["confidence"] = confidence[key]
        self.rows.append(row)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "dataset": self.dataset, "receipts": self.n, "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "receipts_per_second": round(self.n / self.seconds, 3) if self.seconds else None,
            "fields": {k: {"exact": round(s.rate("exact"), 4), "near": round(s.rate("near"), 4),
                           "exact_punctuation_as_space": round(s.rate("loose"), 4), "n": s.n}
                       for k, s in self.fields.items()},
            "rows": self.rows,
        }

    def to_markdown(self) -> str:
        lines = [f"Model `{self.model}` on `{self.dataset}`: {self.n} receipts, "
                 f"{self.failed} failed, {self.seconds:.1f} s", "",
                 "| field | exact | near (similarity >= 0.9) | exact, punctuation as space |",
                 "| --- | ---: | ---: | ---: |"]
        for key, s in self.fields.items():
            lines.append(f"| {key} | {100 * s.rate('exact'):.1f}% | {100 * s.rate('near'):.1f}% "
                         f"| {100 * s.rate('loose'):.1f}% |")
        return "\n".join(lines) + "\n"

    def save_chart(self, png_path: str | Path) -> Path:
        """A bar chart of exact and near accuracy per field (matplotlib, Agg backend)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = list(self.fields)
        exact = [100 * self.fields[k].rate("exact") for k in keys]
        near = [100 * self.fields[k].rate("near") for k in keys]
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], exact, width=0.4, label="exact")
        ax.bar([x + 0.2 for x in xs], near, width=0.4, label="near (>= 0.9)")
        ax.set_xticks(list(xs), keys)
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of receipts")
        ax.set_title(f"{self.model} on {Path(self.dataset).name} (n={self.n})", fontsize=9)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = Path(png_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path


def load_labels(dataset_dir: str | Path, limit: int | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(image path, label dict) pairs of a labelled folder, sorted by id. Two layouts:
    sroie-dev's (``labels/X.json`` beside ``images/X.jpg``, or the label's ``image`` key) and
    the bundled samples' (``X.jpg`` beside ``X.label.json`` in one folder)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise ConfigError(f"dataset {root}: no such folder")
    if (root / "labels").is_dir():
        pairs = [(root / label.get("image", f"images/{path.stem}.jpg"), label)
                 for path, label in _read_labels(sorted((root / "labels").glob("*.json")))]
    else:
        pairs = [(_sibling_image(path), label)
                 for path, label in _read_labels(sorted(root.glob("*.label.json")))]
    if not pairs:
        raise ConfigError(f"dataset {root}: no labels (expected labels/*.json with images/, "
                          f"or X.jpg beside X.label.json)")
    missing = [str(image) for image, _ in pairs if not image.is_file()]
    if missing:
        raise ConfigError(f"dataset {root}: {len(missing)} labelled image(s) missing, first {missing[0]}")
    return pairs[:limit] if limit else pairs


def _read_labels(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in paths:
        try:
            label = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"label {path} is not valid JSON: {exc}") from exc
        if not isinstance(label, dict):
            raise ConfigError(f"label {path} is not a JSON object")
        out.append((path, label))
    return out


def _sibling_image(label_path: Path) -> Path:
    """``X.label.json`` -> ``X.jpg`` (or the first ``X.<image suffix>`` present)."""
    stem = label_path.name[: -len(".label.json")]
    for suffix in (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"):
        if (label_path.parent / (stem + suffix)).is_file():
            return label_path.parent / (stem + suffix)
    return label_path.parent / f"{stem}.jpg"


def predicted_fields(receipt) -> dict[str, Any]:
    """Receipt -> the dataset's four keys."""
    if receipt is None:
        return {}
    return {key: getattr(receipt, attr) for key, attr in FIELDS.items()}


def predicted_confidence(receipt) -> dict[str, float]:
    """Receipt -> its per-field confidence under the dataset's four keys (those it has)."""
    confidence = getattr(receipt, "confidence", None) or {}
    return {key: confidence[attr] for key, attr in FIELDS.items() if attr in confidence}


def evaluate(backend, dataset_dir: str | Path, *, limit: int | None = None,
             progress: Callable[[int, int], None] | None = None, batch_size: int | None = None,
             pairs: list[tuple[Path, dict[str, Any]]] | None = None) -> EvalReport:
    """Run ``backend`` over a labelled folder and score every field.

    ``progress(done, total)`` is called after each batch (the CLI draws a bar with it);
    ``pairs``: the folder's ``load_labels`` when the caller has read them already.
    """
    from extractor.images import ReceiptInput

    pairs = pairs if pairs is not None else load_labels(dataset_dir, limit)
    report = EvalReport(model=backend.version, dataset=str(dataset_dir))
    size = batch_size or getattr(getattr(backend, "spec", None), "batch_size", 8)
    t0 = time.perf_counter()
    for start in range(0, len(pairs), size):
        chunk = pairs[start:start + size]
        inputs = [ReceiptInput.from_bytes(p.read_bytes(), str(p)) for p, _ in chunk]
        for (path, label), result in zip(chunk, backend.extract(inputs), strict=True):
            report.add(label.get("id", path.stem), predicted_fields(result.receipt), label,
                       reason=result.reason if result.status == "failed" else None,
                       confidence=predicted_confidence(result.receipt))
        if progress is not None:
            progress(min(start + size, len(pairs)), len(pairs))
    report.seconds = time.perf_counter() - t0
    return report
