"""Receipt extraction: images in, validated ``Receipt`` records out.

Framework-free: nothing here imports Airflow, and torch / transformers / OCR engines
are imported only inside the backends that use them.
"""

from extractor.errors import ExtractorError
from extractor.images import ReceiptInput
from extractor.schema import ExtractionResult, LineItem, Receipt
from extractor.spec import ExtractorSpec, resolve_spec

__all__ = ["ExtractionResult", "ExtractorError", "ExtractorSpec", "LineItem", "Receipt",
           "ReceiptInput", "resolve_spec"]
__version__ = "0.1.0"
