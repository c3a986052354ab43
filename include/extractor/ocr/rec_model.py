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

Whichever head runs, ``add_best_path_output`` (applied in memory when the engine loads)
makes the recogniser return, per time step, only the index and the probability of its
most likely class, computed by ArgMax and ReduceMax on the model's own Softmax output:
RapidOCR's CTC decoding uses nothing else (``preds.argmax(2)``, ``preds.max(2)``), so the
text and scores are the same, bit for bit, without a [batch, steps, 18,710] float tensor
per call in onnxruntime's arena and again in numpy (``extractor.ocr.ctc_decode`` reads it).

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

HEADS = ("full", "latin")  # "full": RapidOCR's own classifier, unchanged
RECIPE = "v1"  # bump when the derivation changes: the file name changes with it
CJK_START = 0x2E80


def keep_character(character: str) -> bool:
    """Whether the ``latin`` head keeps this dictionary entry (every code point below U+2E80)."""
    return all(ord(c) < CJK_START for c in character)


def shipped_model(task: str) -> Path:
    """The ``task`` ("det" or "rec") ONNX file inside the installed rapidocr wheel."""
    import rapidocr

    found = sorted((Path(rapidocr.__file__).parent / "models").glob(f"*_{task}_*.onnx"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one {task} model in the rapidocr wheel, found {[p.name for p in found]}")
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


BEST_PATH = "best_path"  # [batch, steps, 2] float32: the best class's index, then its probability


def add_best_path_output(model) -> None:
    """Replace the recogniser's output (the last Softmax, [batch, steps, classes]) by
    ``BEST_PATH``: the argmax over classes (first index on ties, as numpy's) cast to float
    (exact below 2**24 classes) beside the max probability. The Softmax itself is kept, so
    both are taken from the very values RapidOCR would have decoded. Raises ValueError when
    the graph's only output is not a Softmax over the last axis of a 3-d tensor."""
    from onnx import TensorProto, helper

    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError(f"the recogniser has {len(graph.output)} outputs, expected one")
    output = graph.output[0]
    softmax = next((n for n in graph.node if output.name in n.output), None)
    axis = next((helper.get_attribute_value(a) for a in softmax.attribute if a.name == "axis"), -1) if softmax else None
    if softmax is None or softmax.op_type != "Softmax" or axis not in (2, -1):
        raise ValueError("the recogniser does not end in a Softmax over its classes")
    dims = output.type.tensor_type.shape.dim
    if len(dims) != 3:
        raise ValueError(f"the recogniser's output has {len(dims)} dimensions, expected 3")
    probs = f"{output.name}.probs"
    softmax.output[0] = probs
    graph.node.extend([
        helper.make_node("ArgMax", [probs], [f"{BEST_PATH}.index"], axis=2, keepdims=1),
        helper.make_node("Cast", [f"{BEST_PATH}.index"], [f"{BEST_PATH}.index_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", [probs], [f"{BEST_PATH}.prob"], axes=[2], keepdims=1),
        helper.make_node("Concat", [f"{BEST_PATH}.index_f", f"{BEST_PATH}.prob"], [BEST_PATH], axis=2),
    ])
    best = helper.make_tensor_value_info(BEST_PATH, TensorProto.FLOAT, [None, None, 2])
    for src, dst in zip(dims[:2], best.type.tensor_type.shape.dim[:2], strict=True):
        dst.CopyFrom(src)
    del graph.output[:]
    graph.output.append(best)


def _onnx_or_warn(consequence: str):
    """The ``onnx`` module, or None with a warning saying what the recogniser does without it."""
    try:
        import onnx
    except ImportError:
        log.warning("OCR: the 'onnx' package is not installed, so the recogniser %s; pip install onnx", consequence)
        return None
    return onnx


def best_path_model(path: Path) -> bytes | None:
    """``path``'s recogniser with the ``BEST_PATH`` output, serialised for onnxruntime; None
    with a warning without the ``onnx`` package (RapidOCR then decodes the full output)."""
    onnx = _onnx_or_warn("returns its full [batch, steps, classes] output (the same text, ~90 MiB more peak memory)")
    if onnx is None:
        return None
    model = onnx.load(str(path))
    add_best_path_output(model)
    return model.SerializeToString()


def derive_rec_model(head: str, cache_dir: Path | None = None, source: Path | None = None) -> Path | None:
    """The recogniser file for ``head``: None for ``full`` (RapidOCR loads its own), else
    the derived file, made on first use (atomically) and reused; None with a warning when
    it cannot be made (no ``onnx`` package, unwritable cache), so the full head runs."""
    if head not in HEADS:
        raise ValueError(f"rec_head {head!r}: expected one of {HEADS}")
    if head == "full":
        return None
    source = source or shipped_model("rec")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = (cache_dir or default_cache_dir()) / f"{source.stem}.{head}-head-{RECIPE}.{digest}.onnx"
    if target.is_file():
        return target
    onnx = _onnx_or_warn("runs with its full 18,710-class head (same text on Latin receipts, ~10% more CPU, "
                         "more memory)")
    if onnx is None:
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
