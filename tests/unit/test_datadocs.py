"""The Data Docs pages as files: names, escaping of untrusted text, the index, and which
files a request may read (no GX here: records are built by hand)."""

from __future__ import annotations

import os

from extractor.pipeline.quality.datadocs import (
    docs_file,
    docs_record,
    run_page_name,
    write_index,
    write_run_docs,
)
from extractor.pipeline.records import QuarantineRecord


def _record(run_id: str, source: str = "dt=2026-03-01/a.jpg", reason: str = "bad image: empty file"):
    stats = {"run_id": run_id, "logical_date": "2026-03-01", "decision": "alert",
             "decision_reason": "quarantine rate 50.0% > 20.0%", "rows": 2, "validated": 1,
             "valid": 1, "quarantined": 1, "extract_failed": 1, "validation_failed": 0,
             "quarantine_rate": 0.5, "checks": [], "thresholds": {}}
    q = QuarantineRecord(receipt_id="f" * 64, source=source, extractor_version="v1",
                         stage="extract", reason=reason)
    return docs_record(stats, [q], ["v1", "v1"])


def test_page_names_are_file_safe_and_unique():
    a = run_page_name("manual__2026-03-02T00:00:00+00:00")
    b = run_page_name("manual__2026-03-02T00_00_00_00_00")
    assert a != b and a.startswith("manual__2026-03-02T00_00_00_00_00-") and a.endswith(".html")
    assert "/" not in run_page_name("../../etc/passwd") and run_page_name("").endswith(".html")


def test_untrusted_file_names_and_reasons_are_escaped(tmp_path):
    """Receipt file names come from whoever uploads them; the page is served inside the
    Airflow UI's origin, so nothing in them may become markup."""
    page = write_run_docs(tmp_path, _record("r1", source="dt=x/<script>alert(1)</script>.jpg",
                                             reason="bad image: <img src=x onerror=alert(1)>"))
    html = page.read_text()
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in html


def test_the_index_survives_a_broken_run_file(tmp_path):
    write_run_docs(tmp_path, _record("r1"))
    write_run_docs(tmp_path, _record("r2"))
    (tmp_path / "runs" / "broken.json").write_text("{not json")
    index = write_index(tmp_path).read_text()
    assert index.count('class="run-row"') == 3 and "unreadable: broken.json" in index
    assert run_page_name("r1") in index and run_page_name("r2") in index


def test_docs_file_reads_only_inside_the_folder(tmp_path):
    docs = tmp_path / "docs"
    page = write_run_docs(docs, _record("manual__2026-03-02T00:00:00+00:00"))
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", docs / "link.txt")
    assert docs_file(docs, "") == (docs / "index.html").resolve()
    assert docs_file(docs, "runs/manual__2026-03-02T00:00:00+00:00") == page.resolve()
    assert docs_file(docs, f"runs/{page.name}") == page.resolve()
    for outside in ("../secret.txt", "runs/../../secret.txt", "link.txt", "/etc/passwd", "runs/nope"):
        assert docs_file(docs, outside) is None, outside
