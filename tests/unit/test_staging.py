"""Staged JSONL files: round trip, atomic replacement, loud failure on corrupt lines."""

import datetime as dt
import os
import time
from decimal import Decimal

import pytest

from extractor.pipeline.sources.staging import prune_staging, read_staged, read_staged_many, write_staged
from extractor.schema import ExtractionResult, LineItem, Receipt

VERSION = "ocr:rapidocr@3.10.0:parser-v3"


def ok_result(i: int, **fields) -> ExtractionResult:
    receipt = Receipt(store_name="Café Ünïcode", date="2024-01-05", total="12.30",
                      currency="RM", tax_rate="6%", card_last4="**** 1234",
                      line_items=[LineItem(name="Teh", quantity=2, unit_price="1.1000",
                                           line_total="2.20")],
                      confidence={"total": 0.93}, **fields)
    return ExtractionResult(receipt_id=f"{i:064x}", source=f"dt=2024-01-05/{i}.jpg", status="ok",
                            receipt=receipt, raw_text="TOTAL 12.30\n", extractor_version=VERSION,
                            timings={"forward_s": 0.25})


def failed_result(i: int) -> ExtractionResult:
    return ExtractionResult.failed(receipt_id=f"{i:064x}", source=f"{i}.jpg", reason="truncated JPEG",
                                   extractor_version=VERSION, raw_text=None)


def test_round_trip_keeps_types_and_counts(tmp_path):
    results = [ok_result(1), failed_result(2), ok_result(3)]
    info = write_staged(results, tmp_path / "batch-0.jsonl")
    assert info == {"uri": str(tmp_path / "batch-0.jsonl"), "ok": 2, "failed": 1}

    back = read_staged(info["uri"])
    assert back == results
    r = back[0].receipt
    assert r.total == Decimal("12.30") and isinstance(r.total, Decimal)
    assert r.date == dt.date(2024, 1, 5) and r.currency == "MYR" and r.card_last4 == "1234"
    assert r.line_items[0].unit_price == Decimal("1.1000")
    assert back[1].status == "failed" and back[1].reason == "truncated JPEG"
    # one line per result
    assert len((tmp_path / "batch-0.jsonl").read_text().splitlines()) == 3


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "stage" / "b.jsonl"
    write_staged([ok_result(1), ok_result(2)], target)
    write_staged([ok_result(3)], target)  # a retried task overwrites its own file
    assert [r.receipt_id for r in read_staged(target)] == [f"{3:064x}"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.jsonl"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "b.jsonl"
    write_staged([ok_result(1)], target)

    def exploding():
        yield ok_result(2)
        raise RuntimeError("worker killed mid-batch")

    with pytest.raises(RuntimeError):
        write_staged(exploding(), target)
    assert [r.receipt_id for r in read_staged(target)] == [f"{1:064x}"]
    assert [p.name for p in tmp_path.iterdir()] == ["b.jsonl"]


def test_corrupt_line_is_a_run_level_error_with_its_position(tmp_path):
    target = tmp_path / "b.jsonl"
    write_staged([ok_result(1)], target)
    with target.open("a") as fh:
        fh.write('{"receipt_id": "x", "status": "ok"\n')  # truncated line
    with pytest.raises(ValueError, match=r"b\.jsonl:2"):
        read_staged(target)


def test_empty_and_blank_lines_and_file_uri(tmp_path):
    empty = tmp_path / "empty.jsonl"
    assert write_staged([], empty) == {"uri": str(empty), "ok": 0, "failed": 0}
    assert read_staged(empty) == []
    other = tmp_path / "other.jsonl"
    other.write_text("\n" + ok_result(5).model_dump_json() + "\n\n")
    assert len(read_staged(f"file://{other}")) == 1
    assert [r.receipt_id for r in read_staged_many([empty, other])] == [f"{5:064x}"]


def test_receipt_that_no_longer_normalises_comes_back_as_a_failed_result(tmp_path):
    # model_copy skips the normalisers, as a schema change after extraction would.
    odd = ok_result(7)
    odd.receipt = odd.receipt.model_copy(update={"currency": "XXY"})
    target = tmp_path / "b.jsonl"
    write_staged([odd, ok_result(8)], target)
    back = read_staged(target)
    assert back[0].status == "failed" and back[0].receipt_id == f"{7:064x}"
    assert "receipt.currency" in back[0].reason and "XXY" in back[0].reason
    assert back[0].raw_text == "TOTAL 12.30\n" and back[1].status == "ok"


def test_fractional_tax_rate_survives_the_round_trip(tmp_path):
    half = ok_result(9)
    half.receipt = half.receipt.model_copy(update={"tax_rate": Decimal("0.5")})
    write_staged([half], tmp_path / "b.jsonl")
    assert read_staged(tmp_path / "b.jsonl")[0].receipt.tax_rate == Decimal("0.5")


def test_synthetic_batch_round_trips_exactly(tmp_path):
    from extractor.testing.synthetic_results import make_results

    results, _ = make_results(300, seed=5, bad_share=0, failed_share=0.05)
    write_staged(results, tmp_path / "b.jsonl")
    assert read_staged(tmp_path / "b.jsonl") == results


def _run_folder(root, name, age_days, now):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "batch-00000.jsonl").write_text("{}\n")
    for path in (folder / "batch-00000.jsonl", folder):
        os.utime(path, (now - age_days * 86400,) * 2)
    return folder


def test_prune_removes_run_folders_past_the_retention_only(tmp_path):
    now = time.time()
    _run_folder(tmp_path, "old", 31, now)
    _run_folder(tmp_path, "current", 40, now)  # the running run's own folder is never pruned
    _run_folder(tmp_path, "recent", 29, now)
    touched = _run_folder(tmp_path, "old-but-retried", 60, now)
    (touched / "batch-00001.jsonl").write_text("{}\n")  # a retry wrote a file today
    (tmp_path / "stray-file.txt").write_text("not a run folder")

    out = prune_staging(tmp_path, older_than_days=30, keep={"current"}, now=now)

    assert out == {"removed": ["old"], "kept": 3, "errors": {}}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "current", "old-but-retried", "recent", "stray-file.txt"]


def test_prune_with_retention_off_or_no_folder_keeps_everything(tmp_path):
    now = time.time()
    _run_folder(tmp_path, "ancient", 400, now)
    assert prune_staging(tmp_path, older_than_days=0, now=now)["removed"] == []
    assert prune_staging(tmp_path / "missing", older_than_days=30, now=now)["removed"] == []
    assert (tmp_path / "ancient").exists()


def test_prune_reports_a_folder_it_cannot_remove_and_goes_on(tmp_path, monkeypatch):
    # Running as root, permissions cannot make rmtree fail here, so its failure is simulated.
    import extractor.pipeline.sources.staging as staging

    now = time.time()
    for name in ("a-old", "b-old"):
        _run_folder(tmp_path, name, 90, now)
    real_rmtree = staging.shutil.rmtree

    def rmtree(path, *a, **kw):
        if path.name == "a-old":
            raise PermissionError(13, "Permission denied", str(path))
        return real_rmtree(path, *a, **kw)

    monkeypatch.setattr(staging.shutil, "rmtree", rmtree)
    out = prune_staging(tmp_path, older_than_days=30, now=now)
    assert out["removed"] == ["b-old"] and list(out["errors"]) == ["a-old"]
    assert (tmp_path / "a-old").exists() and not (tmp_path / "b-old").exists()
