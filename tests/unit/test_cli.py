"""The CLI end to end on real backends: OCR on bundled receipts, a tiny local Mllama."""

import json
import shutil
from pathlib import Path

import pytest

from extractor.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "include" / "extractor" / "samples" / "receipts"
SAMPLE = SAMPLES / "X51006466062.jpg"


def test_extract_prints_the_record(capsys):
    assert main(["extract", str(SAMPLE), "--model", "ocr"]) == 0
    record = json.loads(capsys.readouterr().out)
    label = json.loads((SAMPLES / "X51006466062.label.json").read_text())
    assert record["status"] == "ok"
    assert record["receipt"]["date"] == label["date_iso"]
    assert record["extractor_version"].startswith("ocr:rapidocr")


def test_batch_writes_jsonl_csv_and_summary(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(SAMPLE, inp / "good.jpg")
    (inp / "broken.jpg").write_bytes(b"not a jpeg")
    # exit 1: a receipt failed (the outputs are still written)
    out = str(tmp_path / "out")
    assert main(["batch", "--input-dir", str(inp), "--output-dir", out, "--model", "ocr"]) == 1
    lines = [json.loads(line) for line in (tmp_path / "out" / "receipts.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in lines) == ["failed", "ok"]
    assert "unsupported format" in next(r["reason"] for r in lines if r["status"] == "failed")
    csv_rows = (tmp_path / "out" / "receipts.csv").read_text().splitlines()
    assert len(csv_rows) == 3 and csv_rows[0].startswith("source,receipt_id,status")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["ok"], summary["failed"]) == (1, 1) and summary["receipts_per_s"] > 0


def test_eval_writes_report_table_and_chart(tmp_path, capsys):
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "labels").mkdir()
    for rid in ("X51006466062", "X00016469619"):
        shutil.copy(SAMPLES / f"{rid}.jpg", ds / "images" / f"{rid}.jpg")
        shutil.copy(SAMPLES / f"{rid}.label.json", ds / "labels" / f"{rid}.json")
    out = tmp_path / "eval"
    assert main(["eval", "--dataset", str(ds), "--model", "ocr", "--output-dir", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report  # scored something
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert "date" in (out / "eval.md").read_text()


def test_compare_two_extractors(capsys, tiny_mllama_dir, tmp_path, monkeypatch):
    """OCR vs the tiny random Mllama loaded from a local folder via the model store."""
    monkeypatch.setenv("RECEIPT_MODEL_CACHE", str(tmp_path / "cache"))
    spec_b = json.dumps({"backend": "hf", "model_id": "tiny/mllama", "source": str(tiny_mllama_dir),
                         "dtype": "float32", "max_new_tokens": 8, "batch_size": 1, "grammar": "none"})
    assert main(["compare", "--image", str(SAMPLE), "--model-a", "ocr", "--model-b", spec_b]) == 0
    out = capsys.readouterr().out
    assert "store_name" in out and "total" in out and "≠" in out  # a random model disagrees with OCR


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    assert "llama-3.2-90b-vision-instruct" in capsys.readouterr().out


def test_unknown_preset_is_a_clear_error(capsys):
    assert main(["extract", str(SAMPLE), "--model", "gpt-17"]) == 2
    assert "unknown extractor preset 'gpt-17'" in capsys.readouterr().err
    from extractor.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown extractor preset"):  # --debug: the exception
        main(["--debug", "extract", str(SAMPLE), "--model", "gpt-17"])


def test_eval_reads_the_bundled_samples_layout(tmp_path, capsys):
    """X.jpg beside X.label.json in one folder (include/extractor/samples/receipts)."""
    out = tmp_path / "eval"
    assert main(["eval", "--dataset", str(SAMPLES), "--model", "ocr", "--output-dir", str(out),
                 "--limit", "2"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["receipts"] == 2 and report["failed"] == 0
    assert [row["id"] for row in report["rows"]] == sorted(p.stem for p in SAMPLES.glob("*.jpg"))[:2]
