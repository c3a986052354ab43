"""The base class's promises, checked with a minimal concrete backend defined here."""

import io

import pytest
from PIL import Image

from extractor.backends.base import Backend
from extractor.errors import ParseError
from extractor.images import ReceiptInput
from extractor.schema import Receipt
from extractor.spec import ExtractorSpec


class EchoBackend(Backend):
    """Reads the total from the image width: a 'model' whose output we control."""

    def _forward(self, images):
        return [f"{im.width}" if im.width != 77 else RuntimeError("device fell over") for im in images]

    def _postprocess(self, raw):
        if raw == "99":
            raise ParseError("no JSON object", raw_text=raw)
        return Receipt(total=raw, currency="RM")


def item(width, name):
    buf = io.BytesIO()
    Image.new("RGB", (width, 64)).save(buf, "PNG")
    return ReceiptInput.from_bytes(buf.getvalue(), name)


@pytest.fixture
def backend():
    return EchoBackend(ExtractorSpec(backend="ocr", model_id="echo"))


def test_order_length_and_reasons_are_kept(backend):
    inputs = [item(64, "a"), ReceiptInput.from_bytes(b"", "empty"), item(99, "garbled"),
              item(77, "crash"), item(120, "b")]
    results = backend.extract(inputs)
    assert [r.source for r in results] == ["a", "empty", "garbled", "crash", "b"]
    assert [r.status for r in results] == ["ok", "failed", "failed", "failed", "ok"]
    assert results[0].receipt.total == 64 and results[4].receipt.currency == "MYR"
    assert "empty file" in results[1].reason
    assert results[2].reason.startswith("unparseable output") and results[2].raw_text == "99"
    assert "device fell over" in results[3].reason
    assert all(r.extractor_version == backend.version for r in results)


def test_all_bad_batch_never_calls_the_model(backend):
    results = backend.extract([ReceiptInput.from_bytes(b"", "x")])
    assert results[0].status == "failed"
