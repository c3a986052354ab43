"""The recogniser with a smaller classifier head, derived once from the model RapidOCR ships.

RapidOCR 3.10's recogniser (PP-OCRv6 small) ends in a 120 x 18,710 classifier: CTC blank,
18,708 characters and space, almost all of them CJK ideographs. On a receipt crop that head
(MatMul, bias, softmax over 18,710 classes per time step) is ~11-13% of the recogniser's CPU
and its output tensors the largest in the memory arena. ``derive_rec_model`` keeps the
columns of the characters below U+2E80 (where the CJK radicals begin: Latin, Greek,
Cyrillic, the other alphabets, punctuation, currency and symbol blocks), 1,750 classes,
and writes that model into a cache directory once; the backbone and the kept weights are
the shipped ones, bit for bit. Text that the full head reads in those scripts reads the
same; a CJK character comes out as the nearest kept one (measurements in docs/ocr.md).

Nothing is downloaded: the source is the ONNX file inside the rapidocr wheel, and the
derived file is named by the source's sha256 and this recipe's version, so an upgraded
wheel derives a new file and a stale one is never loaded. Editing the graph needs the
``onnx`` package; without it (or without a writable cache) the engine falls back to the
full head with a warning that says why.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

HEADS = ("full", "latin")  # "full": RapidOCR's own model, unchanged
RECIPE = "v1"  # bump when the derivation changes: the file name changes with it
CJK_START = 0x2E80


def keep_character(character: str) -> bool:
    """Whether the ``latin`` head keeps this dictionary entry (every code point below U+2E80)."""
    return all(ord(c) < CJK_START for c in character)


def shipped_rec_model() -> Path:
    """The recogniser ONNX file inside the installed rapidocr wheel."""
    import rapidocr

    found = sorted((Path(rapidocr.__file__).parent / "models").glob("*_rec_*.onnx"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one recogniser in the rapidocr wheel, found {[p.name for p in found]}")
    return found[0]


def default_cache_dir() -> Path:
    """``$RECEIPT_OCR_CACHE``, else ``$XDG_CACHE_HOME/receipts/ocr`` (``~/.cache`` by default)."""
    if os.environ.get("RECEIPT_OCR_CACHE"):
        return Path(os.environ["RECEIPT_OCR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "receipts" / "ocr"


def slice_head(model, keep=keep_character) -> int:
    """Cut the final classifier (MatMul + bias before the last Softmax) down to the blank,
    the kept characters and space, and the ``character`` metadata with it; returns the
    number of classes left. Raises ValueError when the graph does not end that way."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    meta = {p.key: p for p in model.metadata_props}
    if "character" not in meta:
        raise ValueError("the model carries no 'character' metadata")
    characters = meta["character"].value.splitlines()
    kept = [i for i, c in enumerate(characters) if keep(c)]
    columns = np.array([0, *(i + 1 for i in kept), len(characters) + 1])  # blank, kept, space
    weights = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    node = producer.get([n for n in graph.node if n.op_type == "Softmax"][-1].input[0])
    while node is not None and node.op_type == "Identity":
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Add" or not any(i in weights for i in node.input):
        raise ValueError("the recogniser does not end in MatMul + bias + Softmax")
    bias = next(i for i in node.input if i in weights)
    matmul = producer.get(next(i for i in node.input if i not in weights))
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in weights:
        raise ValueError("the recogniser's head is not a MatMul with a weight matrix")
    for name, axis in ((matmul.input[1], 1), (bias, 0)):
        array = numpy_helper.to_array(weights[name])
        if array.shape[axis] != len(characters) + 2:
            raise ValueError(f"{name}: {array.shape[axis]} classes, the dictionary has {len(characters) + 2}")
        weights[name].CopyFrom(numpy_helper.from_array(np.take(array, columns, axis=axis), name))
    meta["character"].value = "\n".join(characters[i] for i in kept)
    del graph.value_info[:]  # shapes inferred from the old head
    graph.output[0].type.tensor_type.shape.dim[-1].dim_value = len(columns)
    return len(columns)


def derive_rec_model(head: str, cache_dir: Path | None = None, source: Path | None = None) -> Path | None:
    """The recogniser file for ``head``: None for ``full`` (RapidOCR loads its own), else
    the derived file, made on first use (atomically) and reused; None with a warning when
    it cannot be made (no ``onnx`` package, unwritable cache), so the full head runs."""
    if head not in HEADS:
        raise ValueError(f"rec_head {head!r}: expected one of {HEADS}")
    if head == "full":
        return None
    source = source or shipped_rec_model()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = (cache_dir or default_cache_dir()) / f"{source.stem}.{head}-head-{RECIPE}.{digest}.onnx"
    if target.is_file():
        return target
    try:
        import onnx
    except ImportError:
        log.warning("OCR: the 'onnx' package is not installed, so the recogniser runs with its full "
                    "18,710-class head (same text on Latin receipts, ~10% more CPU, more memory); pip install onnx")
        return None
    model = onnx.load(str(source))
    classes = slice_head(model)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(model.SerializeToString(deterministic=True))
        os.replace(tmp, target)  # a killed process never leaves half a model under the real name
    except OSError as exc:
        log.warning("OCR: cannot write the %s-head recogniser to %s (%s): running the full head", head, target, exc)
        return None
    log.info("OCR: derived the %s-head recogniser (%d classes) at %s", head, classes, target)
    return target
