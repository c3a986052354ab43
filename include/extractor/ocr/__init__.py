"""OCR layout and parsing: boxes -> lines (de-skewed) -> receipt fields.

``engine`` wraps RapidOCR, ``layout`` rebuilds lines, ``parser`` reads fields, and
``picker`` is the small learned model (numpy only at inference) that chooses which
lines are the store name and address and which date/amount is the receipt's.
"""
