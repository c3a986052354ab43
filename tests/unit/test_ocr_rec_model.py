"""The recogniser with a cut-down head: the derivation on a tiny model built here (same
shape of graph as PP-OCR's: ... -> MatMul -> Add -> Identity -> Softmax), its cache, its
fallbacks, and once on the model the rapidocr wheel ships."""

import logging
import sys

import numpy as np
import pytest

from extractor.ocr import rec_model
from extractor.ocr.rec_model import BEST_PATH, add_best_path_output, derive_rec_model, keep_character, slice_head

onnx = pytest.importorskip("onnx")  # a runtime requirement (requirements.txt); the fallback is tested below

CHARACTERS = ["A", "b", "7", "本", "é", "京", "€", "ア"]  # the CJK ones (本 京 ア) are cut
KEPT = ["A", "b", "7", "é", "€"]


def _tiny_model(path, seed=0, tie=False):
    """x [1, 5, 4] -> MatMul W [4, 10] -> Add b -> Identity -> Softmax: blank, 8 characters, space.
    ``tie``: classes 3 and 6 get the same weights and a large bias: equal best probabilities."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(seed)
    n = len(CHARACTERS) + 2
    weights = rng.randn(4, n).astype(np.float32)
    bias = rng.randn(n).astype(np.float32)
    if tie:
        weights[:, 6] = weights[:, 3]
        bias[3] = bias[6] = 20.0
    w = numpy_helper.from_array(weights, "head.w")
    b = numpy_helper.from_array(bias, "head.b")
    nodes = [helper.make_node("MatMul", ["x", "head.w"], ["mm"]),
             helper.make_node("Add", ["mm", "head.b"], ["logits"]),
             helper.make_node("Identity", ["logits"], ["logits2"]),
             helper.make_node("Softmax", ["logits2"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, n])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"character": "\n".join(CHARACTERS)})
    onnx.save(model, str(path))
    return path


def _run(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0], session.get_modelmeta().custom_metadata_map["character"].splitlines()


def test_keep_character_cuts_at_the_cjk_blocks():
    assert all(keep_character(c) for c in ["A", "z", "0", "%", "é", "€", "Ж", "×", "√", "\u2e7f"])
    assert not any(keep_character(c) for c in ["\u2e80", "本", "ア", "한", "（"])  # fullwidth forms are CJK too


def test_sliced_head_keeps_exactly_the_kept_columns(tmp_path):
    source = _tiny_model(tmp_path / "tiny.onnx")
    model = onnx.load(str(source))
    assert slice_head(model) == len(KEPT) + 2
    target = tmp_path / "sliced.onnx"
    onnx.save(model, str(target))
    x = np.random.RandomState(1).randn(1, 5, 4).astype(np.float32)
    full, _ = _run(source, x)
    sliced, characters = _run(target, x)
    assert characters == KEPT
    columns = [0, 1, 2, 3, 5, 7, len(CHARACTERS) + 1]  # blank, A b 7 é €, space
    expected = full[..., columns] / full[..., columns].sum(-1, keepdims=True)  # softmax over the kept classes
    np.testing.assert_allclose(sliced, expected, rtol=1e-5)


def test_slice_head_refuses_a_graph_it_does_not_know(tmp_path):
    model = onnx.load(str(_tiny_model(tmp_path / "tiny.onnx")))
    del model.metadata_props[:]
    with pytest.raises(ValueError, match="character"):
        slice_head(model)
    model = onnx.load(str(_tiny_model(tmp_path / "tiny.onnx")))
    model.graph.node[1].op_type = "Sub"
    with pytest.raises(ValueError, match="MatMul"):
        slice_head(model)


@pytest.mark.parametrize("tie", [False, True])
def test_best_path_output_is_numpys_argmax_and_max_of_the_softmax(tmp_path, tie):
    source = _tiny_model(tmp_path / "tiny.onnx", tie=tie)
    model = onnx.load(str(source))
    add_best_path_output(model)
    target = tmp_path / "best.onnx"
    onnx.save(model, str(target))
    x = np.random.RandomState(3).randn(1, 5, 4).astype(np.float32) * 4
    probs, _ = _run(source, x)
    best, characters = _run(target, x)
    assert characters == CHARACTERS and best.shape == (1, 5, 2) and best.dtype == np.float32
    np.testing.assert_array_equal(best[..., 0].astype(np.int64), probs.argmax(axis=2))  # first index on ties
    np.testing.assert_array_equal(best[..., 1], probs.max(axis=2))  # bit for bit
    if tie:
        assert (probs[..., 3] == probs[..., 6]).all() and (best[..., 0] == 3).all()


def test_best_path_refuses_a_graph_that_does_not_end_in_a_softmax(tmp_path):
    model = onnx.load(str(_tiny_model(tmp_path / "tiny.onnx")))
    model.graph.node[-1].op_type = "Relu"
    with pytest.raises(ValueError, match="Softmax"):
        add_best_path_output(model)


def test_derived_model_is_deterministic_cached_and_named_by_its_source(tmp_path, monkeypatch):
    source = _tiny_model(tmp_path / "tiny.onnx")
    first = derive_rec_model("latin", tmp_path / "a", source=source)
    second = derive_rec_model("latin", tmp_path / "b", source=source)
    assert first.read_bytes() == second.read_bytes()
    assert first.name.startswith("tiny.latin-head-v1.") and not list((tmp_path / "a").glob("*.tmp"))
    monkeypatch.setattr(onnx, "load", lambda *a, **k: pytest.fail("a cached model is derived again"))
    assert derive_rec_model("latin", tmp_path / "a", source=source) == first
    monkeypatch.undo()
    other = derive_rec_model("latin", tmp_path / "a", source=_tiny_model(tmp_path / "tiny.onnx", seed=2))
    assert other != first and other.is_file()  # another wheel's model: another file, never the stale one


def test_full_head_is_rapidocrs_own_and_unknown_heads_are_refused(tmp_path):
    assert derive_rec_model("full", tmp_path) is None
    with pytest.raises(ValueError, match="rec_head"):
        derive_rec_model("ascii", tmp_path)


def test_without_onnx_the_full_head_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    source = _tiny_model(tmp_path / "tiny.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with caplog.at_level(logging.WARNING, logger=rec_model.__name__):
        assert derive_rec_model("latin", tmp_path / "cache", source=source) is None
    assert "'onnx' package is not installed" in caplog.text


def test_an_unwritable_cache_falls_back_with_a_warning(tmp_path, caplog):
    source = _tiny_model(tmp_path / "tiny.onnx")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=rec_model.__name__):
        assert derive_rec_model("latin", blocker / "cache", source=source) is None
    assert "cannot write" in caplog.text


def test_cache_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RECEIPT_OCR_CACHE", str(tmp_path / "ocr"))
    assert rec_model.default_cache_dir() == tmp_path / "ocr"
    monkeypatch.delenv("RECEIPT_OCR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert rec_model.default_cache_dir() == tmp_path / "xdg" / "receipts" / "ocr"


def test_the_shipped_recogniser_is_cut_to_its_non_cjk_characters(tmp_path):
    path = derive_rec_model("latin", tmp_path)
    _, characters = _run_meta(path)
    assert len(characters) == 1748 and all(keep_character(c) for c in characters)
    assert {"R", "M", "0", ".", ":", "%", "$"} <= set(characters)
    _, full = _run_meta(rec_model.shipped_model("rec"))
    assert characters == [c for c in full if keep_character(c)]


def _run_meta(path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_outputs()[0].shape
    return shape, session.get_modelmeta().custom_metadata_map["character"].splitlines()


def test_the_ocr_preset_names_the_head_the_default_settings_run():
    # rows carry the extractor version: the recogniser that read them must be in it
    from extractor.ocr.engine import OcrSettings
    from extractor.spec import resolve_spec

    head = OcrSettings().rec_head
    assert resolve_spec("ocr").revision == ("3.10.0" if head == "full" else f"3.10.0+{head}-head")


def test_the_engine_loads_the_cut_head_and_full_loads_the_wheels(tmp_path):
    from extractor.ocr.ctc_decode import BestPathDecode
    from extractor.ocr.engine import OcrSettings, build_engine

    latin = build_engine(OcrSettings(rec_head="latin"), cache_dir=tmp_path)
    assert len(latin.text_rec.postprocess_op.character) == 1750  # blank + 1,748 + space
    assert [p.name.split(".")[1] for p in tmp_path.iterdir()] == ["latin-head-v1"]
    full = build_engine(OcrSettings(rec_head="full"), cache_dir=tmp_path / "unused")
    assert len(full.text_rec.postprocess_op.character) == 18710 and not (tmp_path / "unused").exists()
    for engine in (latin, full):  # both return their best path only (in memory, nothing written)
        assert engine.text_rec.session.get_output_names() == [BEST_PATH]
        assert isinstance(engine.text_rec.postprocess_op, BestPathDecode)
        assert not engine.text_det.session.session.get_session_options().enable_mem_pattern


def _crops():
    """Printed lines as the detector crops them: short and long (the widest pads the batch
    to ~1,500 px, ~190 time steps), digits, punctuation, a faint one."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=26)
    lines = ["RM", "TOTAL (RM) 39.60", "25/12/2018 14:51", "GST REG NO: 001234567890",
             "NO.53 55,57 & 59, JALAN SAGU 18, TAMAN DAYA, 81100 JOHOR BAHRU, JOHOR.",
             "BOOK TA .K (TAMAN DAYA) SDN BHD", "Qty 2 X 3.50", "CHANGE 0.40"]
    crops = []
    for i, text in enumerate(lines):
        width = int(font.getlength(text)) + 16
        image = Image.new("RGB", (width, 36), "white")
        ImageDraw.Draw(image).text((8, 4), text, fill=(150, 150, 150) if i == 7 else "black", font=font)
        crops.append(np.asarray(image)[:, :, ::-1].copy())  # BGR, as RapidOCR crops
    return crops


def test_best_path_engine_reads_rendered_crops_exactly_as_rapidocr_does(tmp_path):
    # the reference: RapidOCR with its own sessions and its numpy decoding of the full output
    from rapidocr import RapidOCR
    from rapidocr.ch_ppocr_rec.typings import TextRecInput

    from extractor.ocr.engine import OcrSettings, build_engine

    settings = OcrSettings(rec_head="full")
    reference = RapidOCR(params=settings.params())._load_rec_model()
    ours = build_engine(settings, cache_dir=tmp_path)._load_rec_model()
    crops = _crops()
    want, got = reference(TextRecInput(img=crops)), ours(TextRecInput(img=crops))
    assert reference.session.get_output_names() != [BEST_PATH]
    assert got.txts == want.txts and got.scores == want.scores  # scores bit for bit
    assert "TOTAL" in got.txts[1] and sum(len(t) for t in got.txts) > 100
