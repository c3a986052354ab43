"""The pipeline driven by the ONE JSON Variable ``receipts_config`` (no old Variables, no
RECEIPT_* for what it sets), through a real ``dag.test()`` run on the embedded default;
and the rollback switch ``LLAMA_MODEL_PATH`` naming a folder that is not there."""

from __future__ import annotations

import datetime as dt
import json

DAY = dt.date(2026, 3, 2)


def test_the_json_variable_drives_the_run(pipeline, monkeypatch):
    for old in ("AIRFLOW_VAR_RECEIPT_EXTRACTOR", "AIRFLOW_VAR_RECEIPTS_SOURCE"):
        monkeypatch.delenv(old)
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_CONFIG", json.dumps({
        "model": {"preset": "ocr", "batch_size": 1}, "source": str(pipeline.incoming),
        "batches_per_task": 1}))
    for sample in ("X51006466062", "X51005442341"):
        pipeline.put_sample(DAY, sample)

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "success", pipeline.task_states(dag_run)
    [(counts,)] = pipeline.fetch("SELECT counts FROM runs")
    counts = json.loads(counts) if isinstance(counts, str) else counts
    assert counts["discovered"] == 2
    # batch_size 1 x batches_per_task 1, both from the Variable: one mapped extract per receipt
    extract_tasks = [ti for ti in dag_run.get_task_instances() if ti.task_id == "extract"]
    assert len(extract_tasks) == 2


def test_a_missing_llama_model_path_fails_the_run_naming_the_folder(pipeline, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_CONFIG", json.dumps({"model": "llama-3.2-11b-vision"}))
    monkeypatch.setenv("LLAMA_MODEL_PATH", str(tmp_path / "llama-previous"))
    pipeline.put_sample(DAY, "X51006466062")

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "failed"
    states = pipeline.task_states(dag_run)
    # the branch revision is not looked up on the Hub while LLAMA_MODEL_PATH is set
    assert states["resolve_extractor"] == "success" and states["ensure_model"] == "failed"
    # the task's alert row, then the run's alert, which names the task and its error
    (task_message, _), (message, _) = sorted(pipeline.fetch("SELECT message, created_at FROM alerts"),
                                              key=lambda row: row[1])
    assert "failed" in message and "ensure_model (try 1 of 1)" in message
    assert str(tmp_path / "llama-previous") in task_message
