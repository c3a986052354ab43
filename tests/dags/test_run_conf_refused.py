"""A run's conf that asks to run a repository's own code is refused by resolve_extractor,
with one line, before ensure_model can download anything (real dag.test run; the Hub's
``snapshot_download`` is replaced by a recorder because the Hub cannot be reached here:
the test asserts it is never called)."""

from __future__ import annotations

import datetime as dt

from receipts_dag_helpers import synthetic_receipt

DAY = dt.date(2026, 3, 1)


def test_trust_remote_code_from_a_run_conf_is_refused_before_any_download(pipeline, monkeypatch, capfd):
    """(The other refused shapes of conf are unit tests: tests/unit/test_spec_run_conf.py.)"""
    import huggingface_hub

    downloads = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: downloads.append(kw))
    pipeline.put(DAY, "a.jpg", synthetic_receipt(1, date="2026-02-27"))

    conf = {"backend": "legacy-remote-code", "model_id": "attacker/repo", "trust_remote_code": True}
    dag_run = pipeline.run(DAY, conf={"extractor": conf})

    states = pipeline.task_states(dag_run)
    assert dag_run.state == "failed"
    assert states["resolve_extractor"] == "failed" and states["ensure_model"] == "upstream_failed"
    assert downloads == [] and not (pipeline.root / "models").exists()
    # the task log (printed by dag.test) carries the one-line reason
    failure = [line for line in capfd.readouterr().out.splitlines() if "AirflowFailException" in line]
    assert failure and "refused: a run's conf may not set trust_remote_code" in failure[0], failure
