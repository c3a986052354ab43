"""The wire format between extract tasks (clients) and the resident extraction service.

``POST /extract`` takes a batch of receipts of one task's model batch, each with its id,
its source and either its bytes (base64) or a local path the service can read, plus the
extractor spec the task resolved (and the model folder ``ensure_model`` made for it). It
answers with one result per receipt, in the same order with the same ids; a receipt the
service could not read or extract is a failed result with its reason, as in-process.

Results travel in the staged JSONL line format (``staging.staged_json``), so a receipt
crosses the wire exactly as it is staged (the tax-rate percent form included).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from extractor.errors import ExtractorError
from extractor.images import MAX_FILE_BYTES, ReceiptInput, receipt_id_of
from extractor.schema import ExtractionResult


class ServiceError(ExtractorError):
    """The extraction service could not serve a request. ``retryable``: whether a later
    try can succeed (service down, restarting, timed out) or not (a refused model)."""

    retryable = True


class ServiceUnavailableError(ServiceError):
    """No answer: connection refused, the connection lost mid-request, a timeout, or the
    service reports that its model failed to load."""


class ServiceModelMismatchError(ServiceError):
    """The service runs another extractor than the task's spec and does not reload."""

    retryable = False


class ReceiptItem(BaseModel):
    """One receipt of a request: its bytes inline (base64) or a local path to read."""

    receipt_id: str
    source: str
    data_b64: str | None = None
    uri: str | None = Field(None, description="a local path (or file:// URI) on a volume the service mounts")

    @model_validator(mode="after")
    def _one_payload(self) -> ReceiptItem:
        if (self.data_b64 is None) == (self.uri is None):
            raise ValueError("give exactly one of data_b64 and uri")
        return self


class ExtractRequest(BaseModel):
    spec: dict[str, Any] = Field(description="the extractor spec the task resolved (ExtractorSpec fields)")
    model_dir: str | None = Field(None, description="the folder ensure_model made for the spec")
    receipts: list[ReceiptItem]


def encode_inputs(inputs: Sequence[ReceiptInput]) -> list[dict[str, str]]:
    return [{"receipt_id": x.receipt_id, "source": x.source,
             "data_b64": base64.b64encode(x.data).decode("ascii")} for x in inputs]


def decode_item(item: ReceiptItem) -> bytes:
    """The receipt's bytes; ``ValueError`` with the reason when they cannot be had."""
    if item.data_b64 is not None:
        try:
            return base64.b64decode(item.data_b64, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"bad base64 payload: {exc}") from None
    path = Path(item.uri.removeprefix("file://"))
    if not path.is_absolute():
        raise ValueError(f"uri {item.uri!r} is not a local absolute path the service can read")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"bad image: file too large: {size} bytes > {MAX_FILE_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"service cannot read {item.uri}: {exc.strerror or exc}") from None
    if receipt_id_of(data) != item.receipt_id:
        raise ValueError("object changed after discovery (its bytes no longer match its id)")
    return data


def result_to_wire(result: ExtractionResult) -> str:
    from extractor.pipeline.sources.staging import staged_json

    return staged_json(result)


def results_from_wire(lines: Sequence[str], inputs: Sequence[ReceiptInput]) -> list[ExtractionResult]:
    """Parse the service's results and hold them to the contract: one per input, same
    order, same ids. A breach is a run-level error, never silently patched."""
    results = [ExtractionResult.model_validate_json(line) for line in lines]
    sent = [x.receipt_id for x in inputs]
    got = [r.receipt_id for r in results]
    if got != sent:
        first = next((i for i, (a, b) in enumerate(zip(sent, got, strict=False)) if a != b),
                     min(len(sent), len(got)))
        raise ServiceError(f"extraction service broke the contract: sent {len(sent)} receipts, got "
                           f"{len(got)} results, first mismatch at position {first}")
    return results
