"""The ``ocr`` backend end to end: real RapidOCR on synthetic and bundled SROIE receipts.

No mocks: the PP-OCR models ship inside the rapidocr wheel and run on the CPU. Each test
runs a few receipts only (a couple of seconds each on a 2-core machine).
"""

import io
import json
import struct
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

import extractor
from extractor.backends.ocr import OCRBackend
from extractor.evaluation import field_match, similarity
from extractor.images import ReceiptInput
from extractor.spec import resolve_spec
from extractor.testing.synthetic import render_receipt

SAMPLES = Path(extractor.__file__).parent / "samples" / "receipts"


@pytest.fixture(scope="module")
def backend():
    b = OCRBackend(resolve_spec("ocr"))
    yield b
    b.close()


def _jpeg(w, h, color=255) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), color).save(buf, "JPEG")
    return buf.getvalue()


def _png_bomb(width=100_000, height=100_000) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_synthetic_receipts_fields_recovered(backend):
    rendered = [render_receipt(seed) for seed in (0, 1)] + [render_receipt(7, rotate=-8.0)]  # de-skew
    results = backend.extract([ReceiptInput.from_bytes(data, f"synthetic-{i}")
                               for i, (data, _) in enumerate(rendered)])
    assert [r.status for r in results] == ["ok"] * 3
    for result, (_, truth) in zip(results, rendered, strict=False):
        receipt = result.receipt
        assert receipt.date.isoformat() == truth["date"]
        assert receipt.total == Decimal(truth["total"])
        assert receipt.subtotal == Decimal(truth["subtotal"])
        assert receipt.time == truth["time"]
        assert receipt.currency == "MYR"
        assert field_match("company", receipt.store_name, truth["store_name"]) == (True, True)
        assert similarity(receipt.store_address, truth["store_address"]) >= 0.9
        assert set(receipt.confidence) >= {"store_name", "date", "total"}
        assert all(0.0 <= v <= 1.0 for v in receipt.confidence.values())
        assert truth["total"] in result.raw_text  # raw_text = the reconstructed lines
        assert [(i.quantity, i.unit_price, i.line_total) for i in receipt.line_items] == [
            (Decimal(t["quantity"]), Decimal(t["unit_price"]), Decimal(t["line_total"])) for t in truth["line_items"]]
        assert all(similarity(i.name, t["name"]) >= 0.9 for i, t in zip(receipt.line_items, truth["line_items"],
                                                                        strict=True))
        assert result.extractor_version.startswith("ocr:rapidocr@")


def test_malay_month_names_are_read_end_to_end(backend):
    """Receipts printed "TARIKH: 25 DIS 2018" (parser-v8): the Malay names that differ from the
    English ones, rendered and read by the real OCR. parser-v7 read none of these five."""
    months = {3: "MAC", 5: "MEI", 8: "OGOS", 10: "OKT", 12: "DIS"}
    rendered = [render_receipt(100 + m, date=f"2018-{m:02d}-{m * 2 + 1:02d}", date_style="malay") for m in months]
    results = backend.extract([ReceiptInput.from_bytes(data, f"malay-{m}") for m, (data, _) in zip(months, rendered,
                                                                                               strict=True)])
    for (m, name), result, (_, truth) in zip(months.items(), results, rendered, strict=True):
        assert f"{m * 2 + 1:02d} {name} 2018" in result.raw_text  # the OCR read the month as printed
        assert result.status == "ok" and result.receipt.date.isoformat() == truth["date"], (name, result.receipt)


def test_a_phone_printed_after_the_address_never_ends_up_in_it(backend):
    """The phone wrapped with the address ("... 47100 PUCHONG TEL: 03-...") is read on the address's
    line, and the address the backend returns stops before it (parser-v9 offers no span holding it;
    on these renders the picker often stops a line early: bench/ocr_phone_on_address.py, docs/ocr.md)."""
    data, truth = render_receipt(201, phone_on_address=True)
    [result] = backend.extract([ReceiptInput.from_bytes(data, "phone-on-address")])
    assert any("TEL" in line and truth["store_address"].split()[-1] in line for line in result.raw_text.splitlines())
    assert result.status == "ok" and "TEL" not in (result.receipt.store_address or "").upper()
    assert truth["store_address"].startswith(result.receipt.store_address.rstrip(","))


@pytest.mark.parametrize("sample_id", [
    "X00016469619",  # rounded total below "TOTAL AMT 60.31"
    "X51005442397",
    "X51006466062",  # store name over two lines
    "X51007419197",  # registered name printed under the address, cut before "(306295-X)"
])
def test_bundled_sroie_samples(backend, sample_id):
    """End to end on real scans. These receipts are part of sroie-dev, which the shipped
    picker was trained on: this checks the plumbing, docs/ocr.md has the accuracy."""
    label = json.loads((SAMPLES / f"{sample_id}.label.json").read_text())
    data = (SAMPLES / f"{sample_id}.jpg").read_bytes()
    [result] = backend.extract([ReceiptInput.from_bytes(data, sample_id)])
    assert result.status == "ok", result.reason
    got = result.receipt
    assert field_match("date", got.date, label["date"])[0]
    assert field_match("total", got.total, label["total"])[0]
    assert field_match("company", got.store_name, label["company"])[1], got.store_name


def test_bad_images_fail_with_reasons_and_the_batch_goes_on(backend):
    good, _ = render_receipt(3)
    batch = {
        "zero": b"",
        "truncated": good[: len(good) // 3],
        "text.jpg": b"TOTAL 12.00\nthank you\n",
        "bomb": _png_bomb(),
        "tiny": _jpeg(1, 1),
        "blank": _jpeg(300, 400),
        "good": good,
    }
    results = backend.extract([ReceiptInput.from_bytes(d, name) for name, d in batch.items()])
    by_source = {r.source: r for r in results}
    assert [r.source for r in results] == list(batch)
    assert by_source["good"].status == "ok"
    expected = {"zero": "empty file", "truncated": "truncated", "text.jpg": "unsupported format",
                "bomb": "too large", "tiny": "too small", "blank": "no text found"}
    for name, words in expected.items():
        assert by_source[name].status == "failed"
        assert words in by_source[name].reason, by_source[name].reason


def test_spec_asking_for_another_parser_version_is_refused():
    # the row lineage must name the parser that really ran: an old pin is an error, not a lie
    from extractor.errors import ConfigError
    from extractor.ocr import PARSER_VERSION

    assert resolve_spec("ocr").version.endswith(":" + PARSER_VERSION)
    with pytest.raises(ConfigError, match="parser-v1"):
        OCRBackend(resolve_spec({"preset": "ocr", "prompt_version": "parser-v1"}))


def test_ocr_fast_preset_reads_receipts_end_to_end_with_its_own_reader():
    """The opt-in fast preset (docs/ocr.md "An opt-in fast preset") builds its reader from the
    spec's revision, the cut head and narrower inputs included, and its rows say so."""
    fast = OCRBackend(resolve_spec("ocr-fast"))
    try:
        assert (fast.settings.rec_head, fast.settings.rec_min_width) == ("latin", 160)
        rendered, truth = render_receipt(1)
        sample = "X51005442397"
        label = json.loads((SAMPLES / f"{sample}.label.json").read_text())
        results = fast.extract([ReceiptInput.from_bytes(rendered, "synthetic"),
                                ReceiptInput.from_bytes((SAMPLES / f"{sample}.jpg").read_bytes(), sample)])
    finally:
        fast.close()
    assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
    assert results[0].receipt.total == Decimal(truth["total"])
    assert field_match("total", results[1].receipt.total, label["total"])[0]
    assert all("+latin-head+w160+first-read:" in r.extractor_version for r in results)
