"""Backend registry and the per-process model cache.

A process loads a model once and keeps it for every batch it is given
(``load_backend`` is memoised by extractor version and model directory); heavy
modules are only imported when their backend is asked for. Airflow 3 forks a fresh
process per task instance, so in a task the memo lasts one task: production keeps the
model in the resident extraction service (``extractor.serving``) instead.
"""

from __future__ import annotations

import importlib
import threading

from extractor.backends.base import Backend
from extractor.spec import ExtractorSpec

_BACKENDS = {
    "hf": "extractor.backends.hf:HFBackend",
    "ocr": "extractor.backends.ocr:OCRBackend",
    "legacy-remote-code": "extractor.backends.legacy:LegacyRemoteCodeBackend",
}
_loaded: dict[tuple[str, str | None], Backend] = {}
_lock = threading.Lock()


def backend_class(name: str) -> type[Backend]:
    module, _, attr = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def load_backend(spec: ExtractorSpec, model_dir: str | None = None) -> Backend:
    """The loaded backend for ``spec``, built on first use in this process."""
    key = (spec.model_dump_json(), model_dir)
    with _lock:
        if key not in _loaded:
            _loaded[key] = backend_class(spec.backend)(spec, model_dir=model_dir)
        return _loaded[key]


def unload_all() -> None:
    with _lock:
        for backend in _loaded.values():
            backend.close()
        _loaded.clear()


__all__ = ["Backend", "backend_class", "load_backend", "unload_all"]
