"""The recogniser alone: CPU and text of variants of RapidOCR's model on the same crops.

Runs the shipped engine (detector + crops exactly as RapidOCR makes them) over every
``--every``-th sroie-dev image, keeps the recogniser's input crops, then recognises those
crops with each variant (batches of 6 sorted by width, as RapidOCR does) on one thread and
prints CPU seconds and how many crops read differently from the full model:

- ``full``: the wheel's model (18,710-class head), minimum input width 320;
- ``latin``: the head cut to the non-CJK characters (``extractor.ocr.rec_model``, shipped);
- ``latin-w256`` / ``latin-w160``: that with a narrower minimum input width;
- ``latin-int8``: that, quantised to int8 (QDQ, per-channel weights, onnxruntime's
  ``quantize_static``), calibrated on crops of 12 synthetic receipts
  (``extractor.testing.synthetic``), never on the crops scored here.

``--variants`` runs only those named (the first is the reference the others are compared
with); ``--extra-rec NAME=PATH@WIDTH`` adds another recogniser model, e.g. an older
PP-OCR model from another RapidOCR wheel (its character list read from the model).

    nice python bench/ocr_rec_variants.py --dataset ../shared/datasets/sroie-dev --every 60 \\
        [--variants full,latin-w160] [--extra-rec v4=ch_PP-OCRv4_rec_infer.onnx@160] \\
        [--json bench/results/ocr_rec_variants.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def collect_crops(images: list, engine) -> list[np.ndarray]:
    """The recogniser's input crops for ``images``, as RapidOCR cuts them."""
    crops: list[np.ndarray] = []
    rec = engine.text_rec
    recognise = type(rec).__call__

    def keep(self, args):
        crops.extend(args.img if isinstance(args.img, list) else [args.img])
        return recognise(self, args)

    type(rec).__call__ = keep
    try:
        for image in images:
            engine(image)
    finally:
        type(rec).__call__ = recognise
    return crops


def batches(crops: list[np.ndarray], min_width: int, size: int = 6):
    """(indices, normalised batch) as RapidOCR's TextRecognizer builds them."""
    import cv2

    order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        width = int(48 * max(min_width / 48, *(crops[i].shape[1] / crops[i].shape[0] for i in idx)))
        batch = np.zeros((len(idx), 3, 48, width), np.float32)
        for row, i in enumerate(idx):
            w = min(width, math.ceil(48 * crops[i].shape[1] / crops[i].shape[0]))
            resized = cv2.resize(crops[i], (w, 48)).astype(np.float32).transpose(2, 0, 1) / 255
            batch[row, :, :, :w] = (resized - 0.5) / 0.5
        yield idx, batch


def recognise(model: Path, crops: list[np.ndarray], min_width: int) -> tuple[list[str], float]:
    """Greedy CTC text of every crop and the CPU seconds the model took (one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    chars = ["", *session.get_modelmeta().custom_metadata_map["character"].splitlines(), " "]
    texts = [""] * len(crops)
    cpu = 0.0
    for idx, batch in batches(crops, min_width):
        t0 = time.process_time()
        probs = session.run(None, {"x": batch})[0]
        cpu += time.process_time() - t0
        for row, i in enumerate(idx):
            seq = probs[row].argmax(-1)
            keep = np.r_[True, seq[1:] != seq[:-1]] & (seq != 0)
            texts[i] = "".join(chars[c] for c in seq[keep])
    return texts, cpu


def quantise(model: Path, calibration: list[np.ndarray], out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feed = iter([{"x": b} for _, b in batches(calibration, 320)])

        def get_next(self):
            return next(self.feed, None)

    import onnx
    from onnx import version_converter

    opset13 = out.with_name("opset13.onnx")
    onnx.save(version_converter.convert_version(onnx.load(str(model)), 13), str(opset13))  # per-channel QDQ
    pre = out.with_name("pre.onnx")
    quant_pre_process(str(opset13), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def _look(seed: int) -> dict:
    """Varied synthetic receipts for calibration: speckle, slight skew, four font sizes."""
    return {"noise": 0.3 * (seed % 3 == 1), "rotate": (seed % 5 - 2) * 0.7, "font_size": 18 + seed % 4 * 3}


def main(argv: list[str] | None = None) -> None:
    from extractor.images import decode_image
    from extractor.ocr.engine import OcrSettings, build_engine
    from extractor.ocr.rec_model import derive_rec_model, shipped_model
    from extractor.testing.synthetic import render_receipt

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--every", type=int, default=60)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--variants", help="comma-separated: only these (default: all)")
    ap.add_argument("--extra-rec", action="append", default=[], help="NAME=MODEL.onnx@MIN_WIDTH")
    args = ap.parse_args(argv)
    engine = build_engine(OcrSettings(rec_head="full"))
    paths = sorted((args.dataset / "images").glob("*.jpg"))[::args.every]
    crops = collect_crops([decode_image(p.read_bytes()) for p in paths], engine)
    wanted = args.variants.split(",") if args.variants else None
    with tempfile.TemporaryDirectory() as tmp:
        latin = derive_rec_model("latin", Path(tmp))
        variants = {"full": (shipped_model("rec"), 320), "latin": (latin, 320), "latin-w256": (latin, 256),
                    "latin-w160": (latin, 160)}
        synthetic = []  # calibration crops, for int8 only
        if wanted is None or "latin-int8" in wanted:
            synthetic = collect_crops([decode_image(render_receipt(seed, **_look(seed))[0]) for seed in range(12)],
                                      engine)
            variants["latin-int8"] = (quantise(latin, synthetic, Path(tmp) / "int8.onnx"), 320)
        for extra in args.extra_rec:
            name, _, rest = extra.partition("=")
            model, _, width = rest.rpartition("@")
            variants[name] = (Path(model), int(width))
        variants = {k: variants[k] for k in wanted or variants}
        reference, rows = None, []
        for name, (model, width) in variants.items():
            texts, cpu = recognise(model, crops, width)
            reference = reference or texts
            differ = [(a, b) for a, b in zip(reference, texts, strict=True) if a != b]
            rows.append({"variant": name, "min_width": width, "model_mib": round(os.path.getsize(model) / 2**20, 1),
                         "cpu_s_per_receipt": round(cpu / len(paths), 3), "crops_differing": len(differ),
                         "examples": differ[:12]})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    with open("/proc/loadavg") as f:
        info = {"receipts": len(paths), "crops": len(crops), "calibration_crops": len(synthetic),
                "load_average_after": f.read().split()[:3]}
    print(json.dumps(info))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
