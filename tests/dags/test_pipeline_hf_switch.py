"""The HF backend through the real DAG, and switching extractors.

A tiny random-weight Mllama is built offline by the test (``extractor.testing.tiny_models``) and
made available through ``ensure_model`` from a local folder. Its output is gibberish, so
every receipt is quarantined as unparseable: the honest result, with the raw output kept.
The DAG-run param picks it over the Variable (what a backfill with another model does);
going back to the Variable's extractor is a rollback: its rows are still there and nothing
is re-extracted."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from receipts_dag_helpers import synthetic_receipt

from extractor.spec import resolve_spec

DAY = dt.date(2026, 3, 1)
OCR_VERSION = resolve_spec("ocr").version  # the shipped parser version, whatever it is now


@pytest.fixture(scope="module")
def tiny_mllama(tmp_path_factory):
    from extractor.testing.tiny_models import build_tiny_model

    return build_tiny_model("mllama", tmp_path_factory.mktemp("models") / "tiny-mllama")


@pytest.mark.slow
def test_switch_to_a_tiny_mllama_and_roll_back(pipeline, tiny_mllama, monkeypatch):
    monkeypatch.setenv("RECEIPT_BATCHES_PER_TASK", "1")  # one model batch (2) per mapped task
    monkeypatch.setenv("RECEIPT_ALLOWED_MODELS", "tiny/mllama")  # admin: a run may name it
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_THRESHOLDS",
                       json.dumps({"max_quarantine_rate_alert": 1.0, "max_quarantine_rate_fail": 1.0}))
    pipeline.put(DAY, "a.jpg", synthetic_receipt(1, date="2026-02-27"))
    pipeline.put(DAY, "b.jpg", synthetic_receipt(2, date="2026-02-28"))
    pipeline.put(DAY, "broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    hf_spec = {"backend": "hf", "model_id": "tiny/mllama", "revision": "test",
               "source": str(tiny_mllama), "dtype": "float32", "batch_size": 2,
               "max_new_tokens": 8, "device_map": None,
               "grammar": "none"}  # free decoding: random weights write gibberish (quarantined)
    hf_version = "hf:tiny/mllama@test:v1"

    ocr_run = pipeline.run(DAY)  # the Variable: ocr
    assert ocr_run.state == "success", pipeline.task_states(ocr_run)
    ocr_state = pipeline.fetch("SELECT receipt_id, total FROM receipts ORDER BY receipt_id")
    assert len(ocr_state) == 2

    hf_run = pipeline.run(DAY, conf={"extractor": hf_spec})  # a new version re-extracts all
    assert hf_run.state == "success", pipeline.task_states(hf_run)
    states = pipeline.task_states(hf_run)
    assert {k for k in states if k.startswith("extract[")} == {"extract[0]", "extract[1]"}  # 3 / 2
    rows = pipeline.fetch("SELECT source, stage, reason, raw_text FROM quarantine "
                          "WHERE extractor_version = ? ORDER BY source", (hf_version,))
    assert [r[0].rsplit("/", 1)[-1] for r in rows] == ["a.jpg", "b.jpg", "broken.jpg"]
    for _source, stage, reason, raw_text in rows[:2]:
        assert stage == "extract"
        assert reason.startswith(("unparseable output", "invalid fields")), reason
        assert raw_text and raw_text.strip()
    assert "bad image" in rows[2][2]
    (counts, model_id, revision), = pipeline.fetch(
        "SELECT counts, model_id, revision FROM runs WHERE extractor_version = ?", (hf_version,))
    assert json.loads(counts)["discovered"] == 3 and (model_id, revision) == ("tiny/mllama", "test")
    assert pipeline.fetch("SELECT receipt_id, total FROM receipts ORDER BY receipt_id") == ocr_state
    # the param run is an override: the Variable's extractor stays the active version
    assert pipeline.fetch("SELECT run_id, extractor_origin FROM runs ORDER BY started_at") == [
        (ocr_run.run_id, "setting"), (hf_run.run_id, "param")]
    assert pipeline.fetch("SELECT receipt_id, total, is_active_version FROM receipts_current "
                          "ORDER BY receipt_id") == [(*row, True) for row in ocr_state]

    rollback = pipeline.run(DAY)  # back to the Variable's extractor: nothing to re-extract
    assert rollback.state == "success"
    assert pipeline.task_states(rollback)["extract"] == "skipped"
    assert pipeline.fetch("SELECT extractor_version FROM runs WHERE run_id = ?",
                          (rollback.run_id,)) == [(OCR_VERSION,)]
    assert pipeline.fetch("SELECT receipt_id, total FROM receipts WHERE extractor_version = ? "
                          "ORDER BY receipt_id", (OCR_VERSION,)) == ocr_state


def test_hub_model_downloaded_once_with_the_token_from_the_connection(pipeline, tiny_mllama,
                                                                      monkeypatch):
    """The Hugging Face Hub cannot be reached here, so ``huggingface_hub.snapshot_download``
    is replaced by a stand-in that copies the tiny model and records its arguments (the
    only mock in these tests). Everything around it is real: the Airflow connection
    ``huggingface_default`` supplies the token, ``ensure_model`` writes the cache entry and
    its manifest, and a second run finds the model present and downloads nothing."""
    import shutil

    import huggingface_hub

    calls = []

    def fake_snapshot_download(*, repo_id, revision, token, local_dir, **kwargs):
        calls.append({"repo_id": repo_id, "revision": revision, "token": token})
        shutil.copytree(tiny_mllama, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("RECEIPT_ALLOWED_MODELS", "tiny/mllama")  # admin: a run may name it
    monkeypatch.setenv("AIRFLOW_CONN_HUGGINGFACE_DEFAULT",
                       json.dumps({"conn_type": "generic", "password": "hf_test_token_123"}))
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_THRESHOLDS",
                       json.dumps({"max_quarantine_rate_alert": 1.0, "max_quarantine_rate_fail": 1.0}))
    pipeline.put(DAY, "a.jpg", synthetic_receipt(1, date="2026-02-27"))
    sha = "0123abcd" * 5  # a commit: a branch would be resolved on the Hub first (unreachable here)
    spec = {"backend": "hf", "model_id": "tiny/mllama", "revision": sha, "dtype": "float32",
            "device_map": None, "batch_size": 2, "max_new_tokens": 4, "grammar": "none"}

    first = pipeline.run(DAY, conf={"extractor": spec})
    pipeline.put(DAY, "b.jpg", synthetic_receipt(2, date="2026-02-28"))  # arrives late
    second = pipeline.run(DAY, conf={"extractor": spec})

    assert first.state == second.state == "success"
    assert calls == [{"repo_id": "tiny/mllama", "revision": sha, "token": "hf_test_token_123"}]
    cached = pipeline.root / "models" / f"tiny--mllama@{sha}"
    assert (cached / "model.safetensors").is_file()
    assert pipeline.fetch("SELECT count(*) FROM quarantine WHERE extractor_version = ?",
                          (f"hf:tiny/mllama@{sha}:v1",)) == [(2,)]
