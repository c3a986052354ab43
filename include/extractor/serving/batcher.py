"""The resident model and the batcher that feeds it receipts from many requests.

``ResidentModel`` holds the one loaded backend of the service (through ``load_backend``)
and counts its loads. When a request names another spec it reloads (policy ``reload``,
the default: switching or rolling back the Variable needs no restart) or refuses it
(policy ``refuse``: the request gets a clear error and the task fails without a retry).

``Batcher`` is a queue of receipts and one thread that owns the GPU. Requests from any
number of concurrent tasks (and runs) put their receipts in the queue; the thread takes
the oldest receipt's spec and fills a model batch with receipts of that spec, up to the
spec's ``batch_size``, waiting at most ``max_wait_s`` after the oldest receipt arrived.
A batch mixes receipts of several requests; each request gets its own results back, in
its order. A run-level error of a batch (the backend raised) fails the requests that had
receipts in it, with the reason; receipt-level problems are failed results as always.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from extractor.images import ReceiptInput
from extractor.schema import ExtractionResult
from extractor.serving.protocol import ServiceModelMismatchError
from extractor.spec import ExtractorSpec

log = logging.getLogger(__name__)

RELOAD, REFUSE = "reload", "refuse"


class ResidentModel:
    """The service's loaded backend, its spec and its load counter (one per process)."""

    def __init__(self, *, on_other_model: str = RELOAD):
        if on_other_model not in (RELOAD, REFUSE):
            raise ValueError(f"on_other_model must be {RELOAD!r} or {REFUSE!r}")
        self.on_other_model = on_other_model
        self.spec: ExtractorSpec | None = None
        self.backend: Any = None
        self.loads = 0
        self.last_load_s: float | None = None
        self.status = "idle"  # idle (nothing asked yet) | loading | ready | failed
        self.error: str | None = None

    def check(self, spec: ExtractorSpec) -> None:
        """Refuse ``spec`` now (before it queues) when this service does not switch models."""
        if self.on_other_model == REFUSE and self.spec is not None and spec != self.spec:
            raise ServiceModelMismatchError(
                f"the extraction service runs {self.spec.version} and does not switch models "
                f"(--on-other-model refuse); the task asks for {spec.version}"
                + ("" if spec.version != self.spec.version
                   else f" with other settings ({_diff(self.spec, spec)})")
                + ": restart the service with the new --model, or set the Variable back")

    def get(self, spec: ExtractorSpec, model_dir: str | None) -> tuple[Any, float]:
        """The backend for ``spec`` and the seconds spent loading it now (0.0 when resident).
        Called from the batcher thread only."""
        if self.backend is not None and spec == self.spec:
            return self.backend, 0.0
        self.check(spec)
        from extractor.backends import load_backend, unload_all

        if self.backend is not None:
            log.info("switching model: %s -> %s", self.spec.version, spec.version)
            self.backend = None
            unload_all()
        self.status, self.spec, self.error = "loading", spec, None
        t0 = time.perf_counter()
        try:
            self.backend = load_backend(spec, model_dir)
        except Exception as exc:
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        self.last_load_s = time.perf_counter() - t0
        self.loads += 1
        self.status = "ready"
        log.info("loaded %s in %.1f s (load #%d)", spec.version, self.last_load_s, self.loads)
        return self.backend, self.last_load_s


def _diff(a: ExtractorSpec, b: ExtractorSpec) -> str:
    da, db = a.model_dump(), b.model_dump()
    return ", ".join(f"{k}: {da[k]!r} -> {db[k]!r}" for k in da if da[k] != db[k])


@dataclass
class _Job:
    """One request: its receipts, the results filled in as batches finish, its future."""

    spec: ExtractorSpec
    model_dir: str | None
    inputs: list[ReceiptInput]
    enqueued: float = field(default_factory=time.monotonic)
    results: list[ExtractionResult | None] = field(init=False)
    remaining: int = field(init=False)
    model_load_s: float = 0.0
    future: Future = field(default_factory=Future)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.inputs)
        self.remaining = len(self.inputs)
        if not self.inputs:
            self.future.set_result(self)


@dataclass
class BatcherStats:
    batches: int = 0
    receipts: int = 0
    busy_s: float = 0.0  # time inside backend.extract (loads excluded)
    # the last batches only: a resident service runs for weeks
    batch_sizes: deque = field(default_factory=lambda: deque(maxlen=1000))
    batch_seconds: deque = field(default_factory=lambda: deque(maxlen=1000))


class Batcher:
    """Receipts of all requests in one queue; one thread runs the model on full batches."""

    def __init__(self, model: ResidentModel, *, max_wait_s: float = 0.05):
        self.model = model
        self.max_wait_s = max_wait_s
        self.stats = BatcherStats()
        self.in_flight = 0  # receipts inside the model right now
        self._queue: deque[tuple[_Job, int]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._preload: Callable[[], Any] | None = None
        self._thread = threading.Thread(target=self._run, name="extraction-batcher", daemon=True)

    def start(self, preload: Callable[[], Any] | None = None) -> Batcher:
        """Start the thread; ``preload`` (loading the service's start-up model) runs first on it."""
        self._preload = preload
        self._thread.start()
        return self

    def close(self, timeout: float = 30) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, spec: ExtractorSpec, model_dir: str | None, inputs: list[ReceiptInput]) -> Future:
        """Queue a request's receipts; the future resolves to its ``_Job`` when all are done."""
        self.model.check(spec)
        job = _Job(spec, model_dir, list(inputs))
        with self._cond:
            if self._closed:
                raise RuntimeError("the extraction service is shutting down")
            self._queue.extend((job, i) for i in range(len(job.inputs)))
            self._cond.notify_all()
        return job.future

    # --- the batcher thread -------------------------------------------------------------
    def _run(self) -> None:
        if self._preload is not None:
            try:
                self._preload()
            except Exception as exc:  # reported by /health; a request for the model tries again
                log.exception("loading the start-up model failed")
                self.model.status, self.model.error = "failed", f"{type(exc).__name__}: {exc}"
        while (batch := self._next_batch()) is not None:
            self._process(batch)

    def _next_batch(self) -> list[tuple[_Job, int]] | None:
        with self._cond:
            while True:
                while self._queue and self._queue[0][0].future.done():  # its request failed
                    self._queue.popleft()
                if self._closed:
                    return None
                if not self._queue:
                    self._cond.wait()
                    continue
                head = self._queue[0][0]
                same = [entry for entry in self._queue if entry[0].spec == head.spec]
                wait = head.enqueued + self.max_wait_s - time.monotonic()
                if len(same) >= head.spec.batch_size or wait <= 0:
                    taken = same[:head.spec.batch_size]
                    chosen = {id(entry) for entry in taken}
                    self._queue = deque(e for e in self._queue if id(e) not in chosen)
                    return taken
                self._cond.wait(wait)

    def _process(self, batch: list[tuple[_Job, int]]) -> None:
        jobs = list({id(job): job for job, _ in batch}.values())
        head = batch[0][0]
        try:
            backend, load_s = self.model.get(head.spec, head.model_dir)
            for job in jobs:
                job.model_load_s += load_s
            self.in_flight = len(batch)
            t0 = time.perf_counter()
            results = backend.extract([job.inputs[i] for job, i in batch])
            elapsed = time.perf_counter() - t0
        except Exception as exc:  # run level: every request in this batch fails with the reason
            log.exception("a batch of %d receipts failed", len(batch))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self.in_flight = 0
        self.stats.batches += 1
        self.stats.receipts += len(batch)
        self.stats.busy_s += elapsed
        self.stats.batch_sizes.append(len(batch))
        self.stats.batch_seconds.append(round(elapsed, 4))
        for (job, i), result in zip(batch, results, strict=True):
            job.results[i] = result
            job.remaining -= 1
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(job)
