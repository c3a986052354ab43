"""The HTTP face of the resident extraction service (FastAPI on uvicorn, one process).

``GET /health``  200 with the loaded extractor version, the load counter and the queue;
                 503 while the model loads or after its load failed (the reason is in it).
``POST /extract`` a batch of receipts (``protocol.ExtractRequest``) -> one result per
                 receipt, same order, same ids (``results``: staged JSONL lines), plus
                 ``model_load_s``: seconds this request waited for a model (re)load.
                 409: the service runs another model and does not switch (policy refuse);
                 422: a malformed request or spec; 500: the batch failed at run level.
``GET /stats``   the last batches' sizes and seconds (benchmarks read it).

Why FastAPI/uvicorn and not a serving library: the service's one hard part is the batcher
(receipt-level batching across requests of any size, grouped by spec, one GPU thread);
LitServe and Ray Serve batch whole *requests* (``max_batch_size`` requests, each one
item), Triton's Python backend needs its own server image and model repository, and all
add a dependency tree to the GPU image, while FastAPI, uvicorn and pydantic already come
with Airflow. The batcher is framework-free (``batcher.py``) and tested on its own.
"""


import logging
import os
import time
from collections.abc import Callable
from typing import Any

from extractor.images import ReceiptInput
from extractor.schema import ExtractionResult
from extractor.serving.batcher import RELOAD, Batcher, ResidentModel
from extractor.serving.protocol import (
    ExtractRequest,
    ServiceModelMismatchError,
    decode_item,
    result_to_wire,
)

log = logging.getLogger(__name__)


def create_app(batcher: Batcher, *, request_timeout_s: float = 3600.0):
    from fastapi import FastAPI, HTTPException, Response
    from pydantic import ValidationError

    from extractor.spec import ExtractorSpec

    app = FastAPI(title="receipt extraction service")
    model, started = batcher.model, time.monotonic()

    @app.get("/health")
    def health(response: Response) -> dict[str, Any]:
        if model.status in ("loading", "failed"):
            response.status_code = 503
        return {"status": model.status, "error": model.error,
                "extractor_version": model.spec.version if model.spec else None,
                "spec": model.spec.model_dump(mode="json") if model.spec else None,
                "loads": model.loads, "last_load_s": model.last_load_s,
                "on_other_model": model.on_other_model, "queued_receipts": batcher.queued,
                "in_flight_receipts": batcher.in_flight, "batches": batcher.stats.batches,
                "receipts": batcher.stats.receipts, "busy_s": round(batcher.stats.busy_s, 3),
                "max_wait_s": batcher.max_wait_s, "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - started, 1)}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return {"batch_sizes": list(batcher.stats.batch_sizes),
                "batch_seconds": list(batcher.stats.batch_seconds), "loads": model.loads}

    @app.post("/extract")
    def extract(request: ExtractRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            spec = ExtractorSpec(**request.spec)
        except (ValidationError, TypeError) as exc:
            raise HTTPException(422, f"invalid extractor spec: {exc}") from None
        failed, inputs = _read_items(request, spec.version)
        try:
            future = batcher.submit(spec, request.model_dir, [x for x in inputs if x is not None])
            job = future.result(timeout=request_timeout_s)
        except ServiceModelMismatchError as exc:
            raise HTTPException(409, str(exc)) from None
        except TimeoutError:
            raise HTTPException(504, f"not done within the service's {request_timeout_s:.0f} s") from None
        except Exception as exc:  # noqa: BLE001 - the batch failed at run level: say why
            raise HTTPException(500, f"batch failed: {type(exc).__name__}: {exc}") from None
        extracted = iter(job.results)
        results = [r if r is not None else next(extracted) for r in failed]
        return {"extractor_version": spec.version, "results": [result_to_wire(r) for r in results],
                "model_load_s": round(job.model_load_s, 4), "loads": model.loads,
                "service_s": round(time.perf_counter() - t0, 4), "pid": os.getpid()}

    return app


def _read_items(request: ExtractRequest, version: str):
    """Per position: a failed result (unreadable item) or None, and the ReceiptInput or None."""
    failed: list[ExtractionResult | None] = []
    inputs: list[ReceiptInput | None] = []
    for item in request.receipts:
        try:
            inputs.append(ReceiptInput(receipt_id=item.receipt_id, source=item.source,
                                       data=decode_item(item)))
            failed.append(None)
        except ValueError as exc:
            inputs.append(None)
            failed.append(ExtractionResult.failed(receipt_id=item.receipt_id, source=item.source,
                                                  reason=str(exc), extractor_version=version))
    return failed, inputs


def serve(*, model: str | None, model_dir: str | None = None, cache_dir: str | None = None,
          host: str = "127.0.0.1", port: int = 8000, on_other_model: str = RELOAD,
          max_wait_ms: float = 50, log_level: str = "info", warmup: bool = True) -> None:
    """Run the service until SIGTERM/SIGINT; with ``model``, load it right away (and, for
    an ``hf`` model with ``warmup``, run one batch of the bundled samples through it so the
    engine's compilation and graph capture happen before the first task, not in it)."""
    import uvicorn

    resident = ResidentModel(on_other_model=on_other_model)
    batcher = Batcher(resident, max_wait_s=max_wait_ms / 1000)
    batcher.start(preload=_preloader(resident, model, model_dir, cache_dir, warmup) if model else None)
    try:
        uvicorn.run(create_app(batcher), host=host, port=port, log_level=log_level,
                    timeout_graceful_shutdown=30)
    finally:
        batcher.close()


def _preloader(resident: ResidentModel, model: str, model_dir: str | None,
               cache_dir: str | None, warmup: bool) -> Callable[[], Any]:
    from extractor.spec import resolve_spec

    spec = resolve_spec(model)

    def preload():
        from extractor.model_store import ensure_model, pin_revision

        resident.status = "loading"
        token = os.environ.get("HF_TOKEN") or None
        # a Hub branch -> its commit, as resolve_extractor pins the tasks' spec: the same spec,
        # so the first task finds its model resident instead of triggering a reload
        pinned = pin_revision(spec, token=token)
        path = model_dir
        if path is None:  # the store fetches once into the shared cache (None for ocr)
            found = ensure_model(pinned, cache_dir, token=token)
            path = str(found) if found is not None else None
        backend, _ = resident.get(pinned, path)
        if warmup and spec.backend == "hf":
            resident.status = "loading"  # health stays 503 until the engine is warm
            try:
                warm_up(backend, spec.batch_size)
            finally:
                resident.status = "ready"

    return preload


def warm_up(backend: Any, batch_size: int) -> float:
    """One full batch of the bundled sample receipts through ``backend``; its seconds."""
    from importlib.resources import files

    folder = files("extractor") / "samples" / "receipts"
    samples = sorted((p for p in folder.iterdir() if p.name.endswith(".jpg")),
                     key=lambda p: p.name) if folder.is_dir() else []
    if not samples:
        log.warning("no bundled sample receipts: the first request warms the engine up")
        return 0.0
    data = [p.read_bytes() for p in samples]
    inputs = [ReceiptInput.from_bytes(data[i % len(data)], f"warm-up:{samples[i % len(data)].name}")
              for i in range(batch_size)]
    t0 = time.perf_counter()
    backend.extract(inputs)
    elapsed = time.perf_counter() - t0
    log.info("warmed up with a batch of %d sample receipts in %.1f s", batch_size, elapsed)
    return elapsed
