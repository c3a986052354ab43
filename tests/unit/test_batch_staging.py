"""Per-model-batch staging (a retry after SIGKILL re-extracts only what was not staged) and
the choice of the staged results that belong to a run's current mapping."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from extractor.pipeline.sources import batch_staging
from extractor.pipeline.sources.batch_staging import (
    StagingMismatch,
    batch_key,
    chunk_path,
    extract_resumable,
    select_current,
)
from extractor.schema import ExtractionResult

VERSION = "ocr:rapidocr@test:parser-v3"


def _items(n: int, offset: int = 0) -> list[dict]:
    return [{"receipt_id": f"{i + offset:064x}", "uri": f"/in/{i + offset}.jpg", "size": 1}
            for i in range(n)]


def _failed(item: dict) -> ExtractionResult:
    return ExtractionResult.failed(receipt_id=item["receipt_id"], source=item["uri"],
                                   reason="test", extractor_version=VERSION)


# --- selection of the current mapping's results ---------------------------------------
def _entry(index: int, batch: list[dict]) -> dict:
    return {"uri": f"batch-{index}.jsonl", "map_index": index, "batch_key": batch_key(batch)}


def test_results_of_task_instances_the_new_mapping_removed_are_dropped():
    old = [_items(1), _items(1, 1)]  # the last try mapped two batches
    new = [_items(1, 2)]  # a cleared run's discovery: one other batch
    staged = [_entry(0, new[0]), _entry(1, old[1])]  # index 0 re-ran; index 1 kept its old XCom
    current, stale = select_current(staged, new)
    assert current == [staged[0]] and stale == [staged[1]]
    current, stale = select_current(staged, [])  # nothing new: nothing is loaded
    assert current == [] and stale == staged


def test_an_old_result_at_a_current_index_is_not_taken_for_the_new_batch():
    new = [_items(1, 5), _items(1, 6)]
    staged = [_entry(0, new[0]), {**_entry(1, _items(1, 9)), "map_index": 1}]
    with pytest.raises(StagingMismatch, match=r"no staged result for batch\(es\) \[1\] of 2"):
        select_current(staged, new)
    current, _ = select_current([_entry(1, new[1]), _entry(0, new[0])], new)
    assert [e["map_index"] for e in current] == [0, 1]  # batch order, whatever the XCom order


# --- resuming inside one extract task -------------------------------------------------
def test_a_retry_extracts_only_the_model_batches_not_staged(tmp_path):
    items, calls = _items(7), []

    def extract(chunk):
        calls.append([c["receipt_id"] for c in chunk])
        if len(calls) == 3:
            raise RuntimeError("killed")  # the first try dies in its third model batch
        return [_failed(c) for c in chunk]

    with pytest.raises(RuntimeError):
        extract_resumable(items, model_batch_size=2, run_dir=tmp_path, extractor_version=VERSION,
                          extract_chunk=extract)
    calls.clear()
    done = extract_resumable(items, model_batch_size=2, run_dir=tmp_path,
                             extractor_version=VERSION, extract_chunk=lambda c: calls.append(c) or
                             [_failed(x) for x in c])
    assert (done.resumed, done.extracted) == (4, 3)
    assert [r.receipt_id for r in done.results] == [i["receipt_id"] for i in items]
    again = extract_resumable(items, model_batch_size=2, run_dir=tmp_path, extractor_version=VERSION,
                              extract_chunk=lambda c: pytest.fail("nothing is left to extract"))
    assert (again.resumed, again.extracted) == (7, 0)
    other = chunk_path(tmp_path, "another-version", items[:2])
    assert other != chunk_path(tmp_path, VERSION, items[:2])  # a new extractor re-extracts


def test_a_chunk_file_holding_other_receipts_is_extracted_again(tmp_path):
    items = _items(2)
    path = chunk_path(tmp_path, VERSION, items)
    path.parent.mkdir(parents=True)
    path.write_text(_failed(_items(1, 50)[0]).model_dump_json() + "\n")
    done = extract_resumable(items, model_batch_size=2, run_dir=tmp_path, extractor_version=VERSION,
                             extract_chunk=lambda c: [_failed(x) for x in c])
    assert (done.resumed, done.extracted) == (0, 2)


# --- SIGKILL of a real extracting process -----------------------------------------------
CHILD = """
import json, sys
from pathlib import Path
from extractor.backends import load_backend
from extractor.images import ReceiptInput
from extractor.pipeline.sources.batch_staging import extract_resumable
from extractor.spec import resolve_spec

items, run_dir = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
spec = resolve_spec({"preset": "ocr", "batch_size": 2})
backend = load_backend(spec, None)

def extract(chunk):
    return backend.extract([ReceiptInput(receipt_id=i["receipt_id"], source=i["uri"],
                                         data=Path(i["uri"]).read_bytes()) for i in chunk])

done = extract_resumable(items, model_batch_size=spec.batch_size, run_dir=run_dir,
                         extractor_version=spec.version, extract_chunk=extract)
print(json.dumps({"extracted": done.extracted, "resumed": done.resumed,
                  "ids": [r.receipt_id for r in done.results],
                  "ok": sum(r.status == "ok" for r in done.results)}))
"""


def _receipts(folder, n: int) -> list[dict]:
    import hashlib

    from extractor.testing.synthetic import render_receipt

    folder.mkdir()
    items = []
    for seed in range(n):
        data, _ = render_receipt(300 + seed)
        path = folder / f"r{seed}.jpg"
        path.write_bytes(data)
        items.append({"receipt_id": hashlib.sha256(data).hexdigest(), "uri": str(path), "size": len(data)})
    return items


@pytest.mark.slow
def test_sigkill_during_extract_then_retry_loses_and_repeats_nothing(tmp_path):
    items = _receipts(tmp_path / "in", 4)  # one extract task's batch: 2 model batches of 2
    (tmp_path / "items.json").write_text(json.dumps(items))
    run_dir = tmp_path / "staging" / "run"
    argv = [sys.executable, "-c", CHILD, str(tmp_path / "items.json"), str(run_dir)]

    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((run_dir / "chunks").glob("*.jsonl")):
        assert first.poll() is None, first.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # mid-batch: the first model batch is staged
    first.wait(30)
    staged_at_kill = len(list((run_dir / "chunks").glob("*.jsonl")))
    assert first.returncode == -signal.SIGKILL and staged_at_kill == 1

    retry = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert retry.returncode == 0, retry.stderr[-3000:]
    report = json.loads(retry.stdout.strip().splitlines()[-1])

    assert report["resumed"] == 2 * staged_at_kill
    assert report["extracted"] == len(items) - report["resumed"] < len(items)  # < the batch size
    assert report["ids"] == [i["receipt_id"] for i in items]  # 0 lost, 0 duplicated, in order
    assert report["ok"] >= 3  # the resumed results are real extractions, read back
    print("sigkill figure:", {"batch": len(items), "staged_at_kill": 2 * staged_at_kill,
                              "re_extracted": report["extracted"]})


def test_module_docs_name_the_guarantees():
    assert "SIGKILL" in batch_staging.__doc__ and "map index" in batch_staging.__doc__
