"""What a user sees when a command line is wrong: the real CLI in a subprocess, its stderr
and exit code. One line, no traceback (unless --debug), 2 for usage and configuration
errors; nothing created before the input is found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "include" / "extractor" / "samples" / "receipts"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("RECEIPT_", "RECEIPTS_")) and k != "LLAMA_MODEL_PATH"}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO / "include"), environment.get("PYTHONPATH", "")])
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "extractor", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["extract", "missing.jpg"], "error: image missing.jpg: no such file"),
    (["extract", str(SAMPLES / "X51006466062.jpg"), "--model", "gpt-17"],
     "error: unknown extractor preset 'gpt-17'; known: "),
    (["extract", str(SAMPLES / "X51006466062.jpg"), "--model", '{"preset": "ocr",'],
     "error: extractor spec is not valid JSON"),
    (["extract", str(SAMPLES / "X51006466062.jpg"), "--model", '{"preset": "ocr", "colour": "red"}'],
     "error: invalid extractor spec: 1 validation error for ExtractorSpec colour Extra inputs"),
    (["batch", "--input-dir", "nowhere", "--output-dir", "out"],
     "error: --input-dir nowhere: no such folder"),
    (["eval", "--dataset", "nowhere", "--output-dir", "out"], "error: dataset nowhere: no such folder"),
    (["extract", "x.jpg", "--colour"], "error: unrecognized arguments: --colour (see --help)"),
    (["--config", "absent.yaml", "presets"],
     "error: configuration file absent.yaml (--config) does not exist"),
])
def test_usage_and_configuration_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    line = one_line_error(run_cli(*args, cwd=tmp_path))
    assert message in line
    assert not (tmp_path / "out").exists()  # nothing created before the input was found


def test_a_model_that_is_not_available_offline_is_one_line(tmp_path):
    """A Hub model offline (the suite runs with HF_HUB_OFFLINE=1): the model store's message."""
    spec = json.dumps({"backend": "hf", "model_id": "meta-llama/Not-Here", "revision": "0" * 40})
    result = run_cli("extract", str(SAMPLES / "X51006466062.jpg"), "--model", spec,
                     "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert "error: cannot download meta-llama/Not-Here@" in one_line_error(result)


def test_llama_model_path_missing_is_one_line_naming_it(tmp_path):
    result = run_cli("extract", str(SAMPLES / "X51006466062.jpg"), "--model", "llama-3.2-11b-vision",
                     cwd=tmp_path, env={"LLAMA_MODEL_PATH": str(tmp_path / "llama-old")})
    assert one_line_error(result).endswith(f"LLAMA_MODEL_PATH={tmp_path / 'llama-old'}: no such model folder")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "extract", "missing.jpg", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr and "UsageError" in result.stderr


def test_eval_rejects_a_folder_without_labels_and_creates_nothing(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.jpg").write_bytes((SAMPLES / "X51006466062.jpg").read_bytes())
    line = one_line_error(run_cli("eval", "--dataset", "ds", "--output-dir", "out", cwd=tmp_path))
    assert "dataset ds: no labels (expected labels/*.json with images/, or X.jpg beside X.label.json)" in line
    assert not (tmp_path / "out").exists()


def test_batch_exits_1_when_a_receipt_failed(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")
    result = run_cli("batch", "--input-dir", "in", "--output-dir", "out", "--model", "ocr", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["failed"] == 1


def test_model_comes_from_receipts_yaml_in_the_working_folder(tmp_path):
    """The configuration file's model (here an OCR spec with a batch size) is what runs."""
    (tmp_path / "receipts.yaml").write_text("model:\n  preset: ocr\n  batch_size: 3\n")
    result = run_cli("extract", str(SAMPLES / "X51006466062.jpg"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["extractor_version"].startswith("ocr:rapidocr@")
    (tmp_path / "receipts.yaml").write_text("model: ocr\nmodel_cahce: /tmp\n")
    line = one_line_error(run_cli("presets", cwd=tmp_path))
    assert "receipts.yaml: unknown setting(s) model_cahce; known: model, source" in line


def test_help_has_no_rst_markup(tmp_path):
    for args in ([], ["eval"], ["batch"]):
        result = run_cli(*args, "--help", cwd=tmp_path)
        assert result.returncode == 0 and "usage: receipt-extractor" in result.stdout
        assert "``" not in result.stdout
