"""One exception hierarchy for the library.

Receipt-level problems become ``ExtractionResult`` values with a reason; these
exceptions are for run-level failures (bad configuration, a model that will not load)
and for signalling inside the library before a result is built.
"""


class ExtractorError(Exception):
    """Base class of every error this library raises."""


class ConfigError(ExtractorError):
    """An extractor spec, preset or setting that cannot be used."""


class ModelSourceError(ExtractorError):
    """A model could not be fetched, or its files do not match the manifest."""


class WarehouseBusyError(ExtractorError):
    """The warehouse stayed locked by another process for the whole wait (one-line message)."""


class BadImageError(ExtractorError):
    """Input bytes that are not a usable receipt image (the message is the reason)."""


class NormalizationError(ExtractorError, ValueError):
    """A field value that is present but cannot be read as its type."""


class ParseError(ExtractorError):
    """Model output that cannot be turned into a receipt; carries the raw text."""

    def __init__(self, message: str, raw_text: str | None = None):
        super().__init__(message)
        self.raw_text = raw_text
