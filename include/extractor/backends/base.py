"""The backend interface: a batch of receipts in, one result per receipt out.

Subclasses implement ``_forward`` (decoded images -> raw outputs, the only step that
touches the model) and ``_postprocess`` (one raw output -> ``Receipt``). Decoding,
timing, and turning every per-receipt problem into a failed result with a reason live
here, once, so no backend can drop or duplicate a receipt: an exception from one
receipt's preprocess or postprocess is that receipt's reason, and a batch whose
``_forward`` raises is run again one receipt at a time to find the one that breaks it.
Worker problems (``RUN_LEVEL_ERRORS``: out of memory, missing files, I/O) still fail
the task, so its retry, not a quarantine row, deals with them.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from extractor.errors import BadImageError, NormalizationError, ParseError
from extractor.images import ReceiptInput, decode_image
from extractor.inputs.decode import exception_line
from extractor.schema import ExtractionResult, Receipt
from extractor.spec import ExtractorSpec

log = logging.getLogger(__name__)

# Errors of the worker, not of a receipt: they fail the task (which retries), so a
# transient problem never quarantines receipts for good. CUDA errors are known by name
# (torch.cuda.OutOfMemoryError, torch.AcceleratorError) so this module needs no torch.
RUN_LEVEL_ERRORS: tuple[type[BaseException], ...] = (MemoryError, ImportError, OSError)
RUN_LEVEL_NAMES = frozenset({"OutOfMemoryError", "AcceleratorError", "CudaError"})


def is_run_level(exc: BaseException) -> bool:
    """Whether ``exc`` is the worker's problem (fail the task) rather than one receipt's."""
    return isinstance(exc, RUN_LEVEL_ERRORS) or type(exc).__name__ in RUN_LEVEL_NAMES


class Backend(ABC):
    """Base class of all backends. One instance holds one loaded model."""

    def __init__(self, spec: ExtractorSpec):
        self.spec = spec

    @property
    def version(self) -> str:
        return self.spec.version

    def extract(self, inputs: Sequence[ReceiptInput]) -> list[ExtractionResult]:
        """Extract a batch; the result list is in input order and has the same length.
        Whatever one receipt does (an undecodable file, a model or parser error on it)
        becomes that receipt's failed result, never the batch's."""
        results: list[ExtractionResult | None] = [None] * len(inputs)
        images, positions = [], []
        t0 = time.perf_counter()
        for i, item in enumerate(inputs):
            try:
                images.append(self._preprocess(item))
                positions.append(i)
            except BadImageError as exc:
                results[i] = self._failed(item, f"bad image: {exc}")
            except Exception as exc:  # noqa: BLE001 - this receipt's reason, not the batch's
                if is_run_level(exc):
                    raise
                results[i] = self._failed(item, f"preprocess error: {exception_line(exc)}")
        t_pre = (time.perf_counter() - t0) / max(len(inputs), 1)
        if images:
            t1 = time.perf_counter()
            raw_outputs = self._forward_isolated(images)
            t_fwd = (time.perf_counter() - t1) / len(images)
            for i, raw in zip(positions, raw_outputs, strict=False):
                item = inputs[i]
                timings = {"preprocess_s": t_pre, "forward_s": t_fwd}
                results[i] = self._to_result(item, raw, timings)
        return [r for r in results if r is not None]

    def _forward_isolated(self, images: list[Any]) -> list[Any]:
        """``_forward`` on the batch; when it raises (not a run-level error), once more one
        image at a time, so the receipt that breaks the model gets the exception in its
        slot and the others their outputs."""
        try:
            raw_outputs = self._forward(images)
        except Exception as exc:  # noqa: BLE001 - find the receipt that caused it
            if is_run_level(exc):
                raise
            if len(images) == 1:
                return [exc]
            log.warning("%s on a batch of %d: retrying one receipt at a time",
                        exception_line(exc), len(images))
            return [self._forward_one(image) for image in images]
        if len(raw_outputs) != len(images):
            raise RuntimeError(f"{type(self).__name__}._forward returned {len(raw_outputs)} "
                               f"outputs for {len(images)} images")
        return raw_outputs

    def _forward_one(self, image: Any) -> Any:
        try:
            [raw] = self._forward([image])
        except Exception as exc:  # noqa: BLE001 - this receipt's failed result
            if is_run_level(exc):
                raise
            return exc
        return raw

    def _to_result(self, item: ReceiptInput, raw: Any, timings: dict[str, float]) -> ExtractionResult:
        raw_text = self.raw_text(raw)
        if isinstance(raw, BaseException):
            return self._failed(item, f"model error: {exception_line(raw)}", raw_text, timings)
        t0 = time.perf_counter()
        try:
            receipt = self._postprocess(raw)
        except ParseError as exc:
            return self._failed(item, f"unparseable output: {exc}", exc.raw_text or raw_text, timings)
        except (NormalizationError, ValueError) as exc:  # pydantic.ValidationError is a ValueError
            return self._failed(item, f"invalid fields: {exc}", raw_text, timings)
        except Exception as exc:  # noqa: BLE001 - a parser bug on one output fails that receipt only
            if is_run_level(exc):
                raise
            return self._failed(item, f"postprocess error: {exception_line(exc)}", raw_text, timings)
        timings = {**timings, "postprocess_s": time.perf_counter() - t0}
        return ExtractionResult(receipt_id=item.receipt_id, source=item.source, status="ok",
                                receipt=receipt, raw_text=raw_text,
                                extractor_version=self.version, timings=timings)

    def _failed(self, item: ReceiptInput, reason: str, raw_text: str | None = None,
                timings: dict[str, float] | None = None) -> ExtractionResult:
        log.warning("receipt %s (%s) failed: %s", item.receipt_id[:12], item.source, reason)
        return ExtractionResult.failed(receipt_id=item.receipt_id, source=item.source, reason=reason,
                                       raw_text=raw_text, extractor_version=self.version,
                                       timings=timings)

    # --- stages -----------------------------------------------------------------
    def _preprocess(self, item: ReceiptInput) -> Any:
        """Bytes -> what ``_forward`` takes (a PIL image by default)."""
        return decode_image(item.data, page=item.page)

    @abstractmethod
    def _forward(self, images: list[Any]) -> list[Any]:
        """Run the model on a batch. A per-item failure may be returned as an exception
        object in its slot; an exception raised here fails the whole batch (run level)."""

    @abstractmethod
    def _postprocess(self, raw: Any) -> Receipt:
        """One raw output -> Receipt; raise ParseError / NormalizationError on bad output."""

    def raw_text(self, raw: Any) -> str | None:
        """The text kept for audit with each result (model output, OCR lines)."""
        return str(raw) if isinstance(raw, str) else None  # a plain str, not a subclass carrying extras

    def close(self) -> None:  # noqa: B027 - an optional hook: backends without a model keep it
        """Release the model (GPU memory) when a worker is done with it."""
