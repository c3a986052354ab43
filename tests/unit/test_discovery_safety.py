"""Discovery and reading that survive the file system: names that are not UTF-8, links
out of the source root, FIFOs, files that vanish, multi-page documents (one receipt per
page). Real files and links in tmp_path, no Airflow."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest

from extractor.images import file_id_of
from extractor.pipeline import tasks
from extractor.pipeline.sources import discovery
from extractor.pipeline.sources.local_files import OUTSIDE_ROOT, OutsideRootError
from extractor.testing.fuzz import text_pdf

DAY = dt.date(2026, 3, 1)


def _discover(root, **kwargs):
    return discovery.discover(str(root), [DAY], extractor_version="v",
                              already_extracted=lambda v, ids: set(), batch_size=100, **kwargs)


@pytest.fixture
def part(tmp_path):
    folder = tmp_path / "incoming" / f"dt={DAY}"
    folder.mkdir(parents=True)
    return folder


def test_a_name_that_is_not_utf8_travels_readable_and_reopens_exactly(part):
    raw_name = os.fsencode(str(part)) + b"/caf\xe9.jpg"
    with open(raw_name, "wb") as f:
        f.write(b"receipt bytes")

    found = _discover(part.parent)

    [[item]] = found.batches
    assert item.uri.endswith("caf\\xe9.jpg") and item.raw_uri  # readable, and the exact bytes kept
    json.dumps(item.to_dict())  # what the XCom push needs: it used to raise here
    data = discovery.read_bytes(item.uri, raw_uri=item.raw_uri)
    assert data == b"receipt bytes" and item.receipt_id == hashlib.sha256(data).hexdigest()


def test_links_out_of_the_root_broken_links_and_fifos_are_skipped_and_counted(part, tmp_path):
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:TOP secret")
    (part / "good.jpg").write_bytes(b"good")
    (part / "leak.jpg").symlink_to(secret)
    (part / "inside.jpg").symlink_to(part / "good.jpg")  # stays in the root: followed
    (part / "dangling.jpg").symlink_to(tmp_path / "nowhere")
    os.mkfifo(part / "pipe.jpg")  # opening it would block discovery forever
    (part / "folder.jpg").mkdir()

    found = _discover(part.parent)

    assert sorted(r.uri.rsplit("/", 1)[-1] for b in found.batches for r in b) == ["good.jpg"]
    counts = found.counts()
    assert (counts["listed"], counts["duplicates"], counts["skipped"]) == (2, 1, 4)
    assert counts["skipped_reasons"] == {OUTSIDE_ROOT: 1, "broken symbolic link": 1, "not a regular file": 2}
    assert "root:TOP" not in json.dumps(counts)


def test_reading_refuses_a_file_swapped_for_an_outside_link_after_discovery(part, tmp_path):
    (tmp_path / "outside").write_bytes(b"outside")
    (part / "a.jpg").write_bytes(b"a")
    [[item]] = _discover(part.parent).batches
    (part / "a.jpg").unlink()
    (part / "a.jpg").symlink_to(tmp_path / "outside")
    with pytest.raises(OutsideRootError):
        discovery.read_bytes(item.uri, root=str(part.parent))


def test_files_that_vanish_or_change_after_discovery_become_failed_results(part):
    for name in ("gone.jpg", "changed.jpg", "kept.jpg"):
        (part / name).write_bytes(name.encode())
    [batch] = _discover(part.parent).batches
    (part / "gone.jpg").unlink()
    (part / "changed.jpg").write_bytes(b"other bytes")

    results, inputs = tasks._read_chunk([r.to_dict() for r in batch], "v", None, str(part.parent))

    by_name = {(r or i).source.rsplit("/", 1)[-1]: (r, i) for r, i in zip(results, inputs, strict=True)}
    assert by_name["gone.jpg"][0].reason.startswith("vanished")
    assert "changed after discovery" in by_name["changed.jpg"][0].reason
    assert by_name["kept.jpg"][0] is None and by_name["kept.jpg"][1].data == b"kept.jpg"


def test_a_multi_page_document_is_one_receipt_per_page(part):
    pdf = text_pdf(["TOTAL 1.00", "TOTAL 2.00", "TOTAL 3.00"])
    (part / "scan.pdf").write_bytes(pdf)
    (part / "photo.jpg").write_bytes(b"\xff\xd8\xff not really")

    found = _discover(part.parent)

    items = [r for b in found.batches for r in b]
    file_id = hashlib.sha256(pdf).hexdigest()
    assert [(r.receipt_id, r.page) for r in items if r.uri.endswith(".pdf")] == [
        (f"{file_id}-p{n}", n) for n in (1, 2, 3)]
    assert all(file_id_of(r.receipt_id) == file_id for r in items if r.page)
    assert found.counts()["page_receipts"] == 3 and found.new == 4

    results, inputs = tasks._read_chunk([r.to_dict() for r in items], "v", None, str(part.parent))
    assert results == [None] * 4
    assert sorted(i.source.rsplit("/", 1)[-1] for i in inputs) == [
        "photo.jpg", "scan.pdf#page=1", "scan.pdf#page=2", "scan.pdf#page=3"]
