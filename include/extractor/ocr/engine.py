"""The OCR engine: RapidOCR (PP-OCR detection + recognition on onnxruntime) and its settings.

RapidOCR's wheel ships the ONNX models, so this runs offline. The engine is built once
per process; ``run_ocr`` turns its output into plain ``OcrBox`` values (four corner
points, text, score) that the layout code and the on-disk cache share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class OcrSettings:
    """The knobs that trade speed against accuracy (measurements in docs/ocr.md).

    The detector input is capped at 1280 px on its longer side (``limit_type='max'``):
    sroie-dev scans are up to 1800 px tall, and RapidOCR's default (shorter side
    resized to 736 px) costs ~25% more CPU for the same accuracy on a 100-receipt check.
    The angle classifier is off: receipts are upright scans and it only flips crops by
    180 degrees. One onnxruntime thread per engine call: the backend runs two receipts
    at once instead, which uses two cores better than intra-op threading.
    ``text_score`` is low so the parser sees weak boxes too (it drops those < 0.3).
    ``rec_min_width`` is RapidOCR's minimum recogniser input width (320); smaller is
    faster but misreads short boxes ("RM" -> "RH"), so it stays at the default.
    ``mem_arena``: onnxruntime's CPU memory arena (RapidOCR turns it off): ~8% faster
    here for ~200 MiB more peak memory.
    ``mem_pattern``: onnxruntime's memory patterns (on in onnxruntime and RapidOCR) plan one
    block per input shape; nearly every receipt gives the detector a new shape and the
    recogniser's batches new widths, so they only grew the arena. Off: the same reads and
    CPU, a lower peak (docs/ocr.md "Speed and memory").
    ``rec_head``: ``"full"`` (default) is RapidOCR's recogniser as shipped. ``"latin"``
    (an option, not the default: see below) runs it with its classifier cut
    to the 1,750 characters below U+2E80 (``extractor.ocr.rec_model``: derived from the
    wheel's model on first use, cached): ~10% less CPU per receipt and ~110 MiB less peak
    memory on the 100-receipt eval (884.5 vs 996.8 MiB since both heads return their best
    path only; ~240-290 MiB before that); the same text except on
    CJK characters, and scores a little higher. Not the default because the stores-held-out
    cross-validation moved address exact by -0.5 points (69.2 -> 68.7; company +0.2), more
    than the 0.3 a default may cost. Measured in docs/ocr.md "Speed and memory"; int8 and
    narrower widths were rejected.
    """

    limit_side_len: int = 1280
    limit_type: str = "max"
    use_cls: bool = False
    text_score: float = 0.3
    intra_op_threads: int = 1
    rec_batch_num: int = 6
    rec_min_width: int = 320
    mem_arena: bool = True
    mem_pattern: bool = False
    rec_head: str = "full"

    def params(self) -> dict[str, Any]:
        return {
            "Global.log_level": "warning",
            "Global.use_cls": self.use_cls,
            "Global.text_score": self.text_score,
            "Det.limit_side_len": self.limit_side_len,
            "Det.limit_type": self.limit_type,
            "Rec.rec_batch_num": self.rec_batch_num,
            "Rec.rec_img_shape": [3, 48, self.rec_min_width],
            "EngineConfig.onnxruntime.intra_op_num_threads": self.intra_op_threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "EngineConfig.onnxruntime.enable_cpu_mem_arena": self.mem_arena,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OcrBox:
    """One detected text box: corner points (clockwise from top-left), text and score."""

    points: tuple[tuple[float, float], ...]
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points], "text": self.text, "score": self.score}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OcrBox:
        return cls(points=tuple((float(x), float(y)) for x, y in d["points"]),
                   text=str(d["text"]), score=float(d["score"]))


def session_options(settings: OcrSettings):
    """onnxruntime options for the detector and the recogniser: RapidOCR's own (all graph
    optimisations, quiet log, the thread counts and arena of ``settings``) plus
    ``settings.mem_pattern``, which RapidOCR does not expose."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.intra_op_threads >= 1:  # -1: onnxruntime's default, as in RapidOCR
        options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = settings.mem_arena
    options.enable_mem_pattern = settings.mem_pattern
    return options


def build_engine(settings: OcrSettings | None = None, cache_dir: Path | None = None):
    """Load RapidOCR with ``settings`` (imports rapidocr here: nothing heavy at import);
    ``cache_dir``: where a derived recogniser is kept (``rec_model.default_cache_dir()``).

    The detector and recogniser sessions are made here (``session_options``) and handed to
    RapidOCR through its hook for a caller's session; the recogniser returns its best path
    only (``rec_model.add_best_path_output``: the same text and scores, less memory)."""
    import onnxruntime as ort
    from omegaconf import flag_override
    from rapidocr import RapidOCR

    from extractor.ocr.ctc_decode import BestPathDecode
    from extractor.ocr.rec_model import BEST_PATH, best_path_model, derive_rec_model, shipped_model

    settings = settings or OcrSettings()
    rec_path = derive_rec_model(settings.rec_head, cache_dir) or shipped_model("rec")
    rec_source = best_path_model(rec_path) or str(rec_path)
    options, providers = session_options(settings), ["CPUExecutionProvider"]
    engine = RapidOCR(params=settings.params())
    with flag_override(engine.cfg, "allow_objects", True):  # the config holds plain values otherwise
        engine.cfg.Det.session = ort.InferenceSession(str(shipped_model("det")), options, providers=providers)
        engine.cfg.Rec.session = ort.InferenceSession(rec_source, options, providers=providers)
    # Load the models now, not on the first receipt (and not concurrently in two threads).
    engine._load_det_model()
    recogniser = engine._load_rec_model()
    if recogniser.session.get_output_names() == [BEST_PATH]:
        recogniser.postprocess_op = BestPathDecode(character=recogniser.session.get_character_list())
    if settings.use_cls:
        engine._load_cls_model()
    return engine


def run_ocr(engine, image) -> list[OcrBox]:
    """OCR one image (PIL image or array); an image without text gives an empty list."""
    out = engine(image)
    if getattr(out, "boxes", None) is None or getattr(out, "txts", None) is None:
        return []
    return [OcrBox(points=tuple((round(float(x), 1), round(float(y), 1)) for x, y in box),
                   text=str(text), score=round(float(score), 4))
            for box, text, score in zip(out.boxes, out.txts, out.scores, strict=False)]
