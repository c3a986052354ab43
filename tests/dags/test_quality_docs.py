"""Data Docs and the quality report of real DAG runs (dag.test, OCR, DuckDB): a run with
bad images lists every receipt it did not load, with stage and reason, references nothing
on the internet, and the Airflow plugin serves the run's page."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from receipts_dag_helpers import SAMPLES, synthetic_receipt

pytestmark = pytest.mark.slow  # one real dag.test run (OCR on six images) shared by the tests

DAY = dt.date(2026, 3, 1)
REMOTE = re.compile(rb"https?://", re.IGNORECASE)


def _bad_images() -> dict[str, bytes]:
    sample = (SAMPLES / "X51006466062.jpg").read_bytes()
    return {"empty.jpg": b"", "notes.jpg": b"these are my notes, not a photo\n",
            "truncated.jpg": sample[: len(sample) // 2]}


@pytest.fixture(scope="module")
def bad_run(receipts_dag, tmp_path_factory):
    """One run over 2 good receipts, 3 bad images and a future-dated receipt."""
    from receipts_dag_helpers import Pipeline

    root = tmp_path_factory.mktemp("quality-docs")
    config = {"model": "ocr", "source": str(root / "incoming"),
              # 4 of 6 receipts are bad by design: the run alerts, it does not fail
              "thresholds": {"max_quarantine_rate_fail": 0.9}}
    env = {"AIRFLOW_VAR_RECEIPTS_CONFIG": json.dumps(config),
           "RECEIPT_WAREHOUSE_URL": f"duckdb:///{root / 'warehouse.duckdb'}",
           "RECEIPT_STAGING_DIR": str(root / "staging"), "RECEIPT_DATA_DOCS_DIR": str(root / "docs"),
           "RECEIPT_MODEL_CACHE": str(root / "models")}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        pipeline = Pipeline(root=root, dag=receipts_dag, warehouse_url=env["RECEIPT_WAREHOUSE_URL"])
        for name, data in _bad_images().items():
            pipeline.put(DAY, name, data)
        pipeline.put(DAY, "good-1.jpg", synthetic_receipt(1, date="2026-02-27"))
        pipeline.put(DAY, "good-2.jpg", synthetic_receipt(2, date="2026-02-26"))
        pipeline.put(DAY, "future.jpg", synthetic_receipt(3, date="2026-12-24"))
        dag_run = pipeline.run(DAY)
    return pipeline, dag_run, root / "docs"


def test_the_run_page_lists_every_receipt_that_did_not_load(bad_run):
    from extractor.pipeline.quality.datadocs import run_page_name

    pipeline, dag_run, docs = bad_run
    assert dag_run.state == "success", pipeline.task_states(dag_run)
    quarantined = pipeline.fetch("SELECT receipt_id, source, stage, reason FROM quarantine")
    assert sorted(s for _, _, s, _ in quarantined) == ["extract"] * 3 + ["validate"]
    page = (docs / "runs" / run_page_name(dag_run.run_id)).read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="quarantine-row">(.*?)</tr>', page, re.DOTALL)
    assert len(rows) == len(quarantined) == 4
    for receipt_id, source, stage, reason in quarantined:
        [row] = [r for r in rows if receipt_id[:12] in r]
        assert Path(source).name in row and f'class="stage-{stage}">{stage}<' in row
        assert reason.split(":")[0] in row
    assert "quarantine rate" in page and "66.7%" in page  # 4 of 6, not "100 % successful"
    assert "date between" in page  # the checks read as rules
    assert "values must belong to this set" not in page


def test_no_data_docs_file_references_the_internet(bad_run):
    _, _, docs = bad_run
    written = [p for p in docs.rglob("*") if p.suffix in (".html", ".js", ".css")]
    assert {p.name for p in written} >= {"index.html"} and len(written) >= 3  # index, run, report
    offenders = [str(p) for p in written if REMOTE.search(p.read_bytes())]
    assert offenders == []


def test_the_quality_report_is_refreshed_and_linked(bad_run):
    from extractor.pipeline.quality.report import CHARTS

    pipeline, dag_run, docs = bad_run
    assert pipeline.task_states(dag_run)["quality_report"] == "success"
    assert all((docs / "report" / f"{name}.png").stat().st_size > 1000 for name in CHARTS)
    numbers = json.loads((docs / "report" / "report.json").read_text())
    [version] = numbers["versions"].values()
    assert (version["receipts"], version["quarantined"], version["runs"]) == (6, 4, 1)
    index = (docs / "index.html").read_text()
    assert 'href="report/index.html"' in index and dag_run.run_id in index


def test_the_asset_event_names_the_pages(bad_run):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from extractor.pipeline.quality.datadocs import run_page_name

    _, dag_run, docs = bad_run
    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == dag_run.run_id)).all()
        extras = [e.extra for e in events]
    [extra] = extras
    assert extra["data_docs"] == str(docs / "runs" / run_page_name(dag_run.run_id))
    assert extra["quality_report"] == str(docs / "report" / "index.html")


def test_the_plugin_serves_the_pages_to_the_airflow_ui(bad_run):
    """The FastAPI app the api-server mounts at /receipts-quality; Airflow's auth check is
    real (an anonymous request is refused) and swapped out for the reads that follow."""
    import receipts_quality_docs as plugin
    from fastapi.testclient import TestClient

    _, dag_run, docs = bad_run
    app = plugin.create_app(str(docs))
    assert TestClient(app).get("/").status_code == 401
    app.dependency_overrides[app.state.guard] = lambda: None
    client = TestClient(app)
    # what the run's "Data Docs" tab asks for: the UI URL-encodes the run id
    views = plugin.ReceiptsQualityDocsPlugin.external_views
    href = next(v for v in views if v["destination"] == "dag_run")["href"]
    run_id = quote(dag_run.run_id, safe="")
    response = client.get(href.replace(plugin.URL_PREFIX, "").replace("{RUN_ID}", run_id))
    assert response.status_code == 200 and 'class="quarantine-row"' in response.text
    assert "receipts Data Docs" in client.get("/").text
    assert client.get("/report/fill_rate.png").headers["content-type"] == "image/png"
    assert client.get("/runs/no-such-run").status_code == 404
    assert client.get("/../../../etc/passwd").status_code == 404
    assert client.get("/%2e%2e/%2e%2e/etc/passwd").status_code == 404


def test_the_api_server_mounts_the_plugin(airflow_db):
    """Airflow's own plugin loading and api-server app: the pages are mounted at
    /receipts-quality behind Airflow's auth, and the UI gets the nav entry and run tab."""
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    info = {p["name"]: p for p in plugins_manager.get_plugin_info()}["receipts_quality_docs"]
    assert {v["destination"] for v in info["external_views"]} == {"nav", "dag_run"}
    client = TestClient(create_app("core"))
    assert client.get("/receipts-quality/").status_code in (401, 403)  # not for anonymous users
