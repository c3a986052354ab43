"""A day of poison: 100 fuzzed files, a 3-page PDF, a name that is not UTF-8, a link out
of the source root and 5 good receipts. The real DAG (dag.test, OCR backend, DuckDB)
succeeds and every file is accounted for: each page of each distinct file is loaded or
quarantined exactly once, the link is skipped with its reason and counted."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import random

import pytest
from receipts_dag_helpers import synthetic_receipt

from extractor.inputs import document_pages
from extractor.pipeline.sources.local_files import OUTSIDE_ROOT
from extractor.testing.fuzz import mutate, seed_files

DAY = dt.date(2026, 3, 1)
FUZZED = 100


def three_page_pdf() -> bytes:
    from PIL import Image

    pages = [Image.open(io.BytesIO(synthetic_receipt(40 + i, date="2026-02-27"))).convert("RGB")
             for i in range(3)]
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", save_all=True, append_images=pages[1:], resolution=150)
    return buf.getvalue()


def expected_ids(files: list[bytes]) -> set[str]:
    ids = set()
    for data in files:
        sha = hashlib.sha256(data).hexdigest()
        ids |= {sha if page is None else f"{sha}-p{page}" for page in document_pages(data)}
    return ids


@pytest.mark.slow  # 100+ receipts (fuzzed files, PDF pages) through OCR in a real DAG run
def test_a_day_of_poison_succeeds_and_every_file_is_accounted_for(pipeline, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_THRESHOLDS",  # most files are bad by design
                       json.dumps({"max_quarantine_rate_alert": 1.0, "max_quarantine_rate_fail": 1.0}))
    seeds, rng = seed_files(), random.Random(15)
    names, others = sorted(seeds), list(seeds.values())
    files = []
    for i in range(FUZZED):
        _, data = mutate(seeds[names[i % len(names)]], rng, others)
        files.append(pipeline.put(DAY, f"fuzz-{i:03d}.jpg", data).read_bytes())
    pdf = three_page_pdf()
    files.append(pipeline.put(DAY, "statement.pdf", pdf).read_bytes())
    for i in range(5):
        files.append(pipeline.put(DAY, f"good-{i}.jpg", synthetic_receipt(i, date="2026-02-27")).read_bytes())
    odd = synthetic_receipt(9, date="2026-02-28")
    part = pipeline.incoming / f"dt={DAY}"
    with open(os.fsencode(str(part)) + b"/caf\xe9.jpg", "wb") as f:
        f.write(odd)
    files.append(odd)
    secret = tmp_path / "outside-secret.txt"
    secret.write_bytes(b"root:TOP not for the warehouse")
    (part / "leak.jpg").symlink_to(secret)

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "success", pipeline.task_states(dag_run)
    loaded = dict(pipeline.fetch("SELECT receipt_id, source FROM receipts"))
    held = dict(pipeline.fetch("SELECT receipt_id, reason FROM quarantine"))
    assert not set(loaded) & set(held)
    assert set(loaded) | set(held) == expected_ids(files)  # every page of every distinct file
    pdf_id = hashlib.sha256(pdf).hexdigest()
    pdf_pages = {f"{pdf_id}-p{n}" for n in (1, 2, 3)}
    assert pdf_pages <= set(loaded) | set(held)
    pdf_sources = sorted(loaded[i].rsplit("/", 1)[-1] for i in pdf_pages & set(loaded))
    assert pdf_sources[:1] == ["statement.pdf#page=1"]
    assert {loaded.get(hashlib.sha256(odd).hexdigest(), "").rsplit("/", 1)[-1]} == {"caf\\xe9.jpg"}
    assert all(len(loaded[hashlib.sha256(f).hexdigest()]) for f in files[-6:-1])  # the 5 good ones load
    assert not any("root:TOP" in reason or "b'" in reason for reason in held.values())
    counts, summary = pipeline.fetch("SELECT counts, summary FROM runs")[0]
    counts, discovery = json.loads(counts), json.loads(summary)["discovery"]
    assert counts["discovered"] == len(loaded) + len(held) == counts["valid"] + counts["quarantined"]
    assert counts["skipped"] == 1 and discovery["skipped_reasons"] == {OUTSIDE_ROOT: 1}
    assert discovery["listed"] == len(files) and discovery["page_receipts"] >= 3
    assert pipeline.task_states(dag_run)["reconcile"] == "success"
