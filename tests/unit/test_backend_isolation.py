"""One receipt cannot fail its batch: an exception in preprocess, in the model's forward
pass or in postprocess becomes that receipt's failed result; worker problems (memory,
I/O) still fail the task so its retry handles them. A minimal backend defined here."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from extractor.backends.base import Backend
from extractor.images import ReceiptInput
from extractor.schema import Receipt
from extractor.spec import ExtractorSpec


class PoisonableBackend(Backend):
    """A 'model' that breaks the whole batch on a 66 px wide image, as a real processor
    can on one odd input, and a parser that breaks on a 55 px one."""

    def __init__(self, spec, fatal: BaseException | None = None):
        super().__init__(spec)
        self.fatal, self.calls = fatal, []

    def _forward(self, images):
        self.calls.append(len(images))
        if self.fatal is not None:
            raise self.fatal
        if any(im.width == 66 for im in images):
            raise IndexError("index 3 is out of bounds for axis 0")
        return [str(im.width) for im in images]

    def _postprocess(self, raw):
        if raw == "55":
            raise KeyError("total")
        return Receipt(total=raw, currency="RM")


def item(width: int, name: str) -> ReceiptInput:
    buf = io.BytesIO()
    Image.new("RGB", (width, 64)).save(buf, "PNG")
    return ReceiptInput.from_bytes(buf.getvalue(), name)


def test_a_receipt_that_breaks_the_model_or_parser_fails_alone():
    backend = PoisonableBackend(ExtractorSpec(backend="ocr", model_id="poison"))
    results = backend.extract([item(40, "a"), item(66, "breaks-model"), item(55, "breaks-parser"),
                               item(80, "b")])
    assert [r.status for r in results] == ["ok", "failed", "failed", "ok"]
    assert results[1].reason == "model error: IndexError: index 3 is out of bounds for axis 0"
    assert results[2].reason == "postprocess error: KeyError: 'total'"
    assert backend.calls == [4, 1, 1, 1, 1]  # the batch, then one receipt at a time


@pytest.mark.parametrize("fatal", [MemoryError(), OSError(5, "Input/output error")])
def test_worker_problems_still_fail_the_task(fatal):
    backend = PoisonableBackend(ExtractorSpec(backend="ocr", model_id="poison"), fatal=fatal)
    with pytest.raises(type(fatal)):
        backend.extract([item(40, "a"), item(80, "b")])
