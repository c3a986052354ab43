"""Bad files in a partition are quarantined with a reason, never crash the run; the rest
loads and every discovered receipt is accounted for (real dag.test run, OCR, DuckDB)."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import zlib

from receipts_dag_helpers import SAMPLES, synthetic_receipt

DAY = dt.date(2026, 3, 1)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 300-byte PNG whose header declares 10^10 pixels (30 GB once decoded)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b""))


def one_pixel_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(buf, "JPEG")
    return buf.getvalue()


def test_bad_files_are_quarantined_with_reasons_and_the_rest_loads(pipeline, monkeypatch):
    # 6 of 7 receipts are bad by design: raise the suite's limits so the run itself passes
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_THRESHOLDS",
                       json.dumps({"max_quarantine_rate_alert": 0.9, "max_quarantine_rate_fail": 0.95}))
    good = synthetic_receipt(1, date="2026-02-27")
    sample = (SAMPLES / "X51006466062.jpg").read_bytes()
    expected_reasons = {
        "empty.jpg": (b"", "empty file"),
        "truncated.jpg": (sample[: len(sample) // 2], "truncated"),
        "notes.jpg": (b"these are my notes, not a photo\n", "unsupported format"),
        "bomb.png": (png_bomb(), "decompression bomb"),
        "pixel.jpg": (one_pixel_jpeg(), "too small"),
        "huge.jpg": (b"\xff\xd8\xff\xe0" + b"\x00" * (26 * 1024 * 1024), "file too large"),
    }
    for name, (data, _) in expected_reasons.items():
        pipeline.put(DAY, name, data)
    pipeline.put(DAY, "good.jpg", good)
    pipeline.put(DAY, "good-again.jpg", good)  # same bytes: the same receipt, once

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "success", pipeline.task_states(dag_run)
    loaded = pipeline.fetch("SELECT source FROM receipts")
    # the two copies are one receipt, read from the first file listed
    assert [src.rsplit("/", 1)[-1] for (src,) in loaded] == ["good-again.jpg"]
    rows = pipeline.fetch("SELECT source, stage, reason FROM quarantine")
    reasons = {src.rsplit("/", 1)[-1]: (stage, reason) for src, stage, reason in rows}
    assert set(reasons) == set(expected_reasons)
    for name, (_, expected) in expected_reasons.items():
        stage, reason = reasons[name]
        assert stage == "extract" and expected in reason.lower(), (name, reason)
    counts, summary = pipeline.fetch("SELECT counts, summary FROM runs")[0]
    counts, discovery = json.loads(counts), json.loads(summary)["discovery"]
    assert counts["discovered"] == 7 == counts["valid"] + counts["quarantined"]
    assert (discovery["listed"], discovery["duplicates"]) == (8, 1)
    assert pipeline.task_states(dag_run)["reconcile"] == "success"
