"""The README's main job, ``python -m extractor.demo``, in a fresh interpreter with its own
state folder: migrates SQLite metadata, sets the Variable and pool, runs receipts_daily
on the bundled samples with the OCR reader, and prints the warehouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from extractor.spec import resolve_spec


@pytest.mark.slow
def test_demo_runs_the_dag_and_prints_the_warehouse(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "RECEIPT_"))}  # as on a newcomer's machine
    env["COLUMNS"] = "160"
    out = subprocess.run(
        [sys.executable, "-m", "extractor.demo", "--var-dir", str(tmp_path / "var"),
         "--date", "2026-03-01", "--limit", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert f"success; extractor {resolve_spec('ocr').version}" in text
    assert "this run: 2 new receipts" in text
    for name in ("X00016469619.jpg", "X51005442341.jpg"):
        assert name in text  # in the receipts table or the quarantine list
    assert (tmp_path / "var" / "warehouse.duckdb").is_file()
    assert (tmp_path / "var" / "incoming" / "dt=2026-03-01" / "X00016469619.jpg").is_file()
    # the only Variable is the configuration, with the model and no paths (a moved checkout
    # must not keep writing to the old place)
    import sqlite3

    with sqlite3.connect(tmp_path / "var" / "airflow" / "airflow.db") as db:
        variables = db.execute("SELECT key, val, is_encrypted FROM variable").fetchall()
    assert [key for key, _, _ in variables] == ["receipts_config"]
    value, encrypted = variables[0][1], variables[0][2]
    assert str(tmp_path) not in value
    if not encrypted:
        assert json.loads(value) == {"model": "ocr"}
