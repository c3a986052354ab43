"""The extract tasks' side of the resident service: a backend whose model lives elsewhere.

``ServiceBackend.connect`` checks the service's health (waiting while it loads, counted
as the task's model load time) and then offers the in-process backend's contract:
``extract(inputs)`` -> one ``ExtractionResult`` per input, same order, same ids. Every
failure to get an answer is a ``ServiceUnavailableError`` whose message says what
happened and that the task will be retried (Airflow retries any exception but
``AirflowFailException``); a service that runs another model and refuses to switch is a
``ServiceModelMismatchError``, which the task turns into a failure without retry.

The service keeps no state per task: a retried task sends again the receipts whose model
batch was not staged (the batch in flight when the service died, and later ones), and a
batch is staged only once it came back complete, so a service killed mid-batch loses and
duplicates nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from extractor.images import ReceiptInput
from extractor.schema import ExtractionResult
from extractor.serving.protocol import (
    ServiceError,
    ServiceModelMismatchError,
    ServiceUnavailableError,
    encode_inputs,
    results_from_wire,
)
from extractor.spec import ExtractorSpec

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
HEALTH_POLL_S = 2.0


class ServiceBackend:
    """The ``Backend.extract`` contract, served by the resident extraction service at ``url``."""

    def __init__(self, url: str, spec: ExtractorSpec, model_dir: str | None, *, timeout_s: float):
        import httpx

        self.url = url.rstrip("/")
        self.spec = spec
        self.model_dir = model_dir
        self.timeout_s = timeout_s
        self.startup_load_s = 0.0  # waited at connect while the service was loading a model
        self.request_load_s = 0.0  # (re)loads the service did while serving this task's requests
        self._http = httpx.Client(base_url=self.url,
                                  timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S))

    @property
    def version(self) -> str:
        return self.spec.version

    @classmethod
    def connect(cls, url: str, spec: ExtractorSpec, model_dir: str | None, *,
                timeout_s: float) -> ServiceBackend:
        backend = cls(url, spec, model_dir, timeout_s=timeout_s)
        health = backend.wait_ready()
        resident = health.get("spec")
        if health.get("on_other_model") == "refuse" and resident not in (None, spec.model_dump(mode="json")):
            raise ServiceModelMismatchError(
                f"the extraction service at {backend.url} runs {health.get('extractor_version')} and "
                f"does not switch models; this run's extractor is {spec.version}: restart the service "
                "with the new --model, or set the Variable back")
        log.info("extraction service %s: %s, %s, %s loads so far", backend.url, health.get("status"),
                 health.get("extractor_version") or "no model yet", health.get("loads"))
        return backend

    def health(self) -> dict:
        response = self._call("GET", "/health", timeout=CONNECT_TIMEOUT_S)
        return response.json()

    def wait_ready(self) -> dict:
        """The health document once the service is not loading any more (bounded by the
        request timeout); the time spent waiting for a load is ``startup_load_s``. A failed
        start-up load is reported, not waited on."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s
        while True:
            health = self.health()
            if health.get("status") == "failed":
                raise ServiceUnavailableError(
                    f"extraction service at {self.url} could not load its model: {health.get('error')} "
                    "(the task will be retried; fix the service's --model and restart it)")
            if health.get("status") != "loading":
                return health
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(f"extraction service at {self.url} still loading "
                                              f"after {self.timeout_s:.0f} s; the task will be retried")
            time.sleep(HEALTH_POLL_S)
            self.startup_load_s = time.perf_counter() - t0

    @property
    def model_load_s(self) -> float:
        return self.startup_load_s + self.request_load_s

    def extract(self, inputs: Sequence[ReceiptInput]) -> list[ExtractionResult]:
        if not inputs:
            return []
        body = {"spec": self.spec.model_dump(mode="json"), "model_dir": self.model_dir,
                "receipts": encode_inputs(inputs)}
        payload = self._call("POST", "/extract", json=body).json()
        self.request_load_s += float(payload.get("model_load_s") or 0.0)
        return results_from_wire(payload["results"], inputs)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs):
        """One HTTP exchange; every way of not getting an answer becomes a clear error."""
        import httpx

        where = f"extraction service at {self.url}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ServiceUnavailableError(f"{where} is unreachable ({exc}): is it running? "
                                          "the task will be retried") from exc
        except httpx.TimeoutException as exc:
            raise ServiceUnavailableError(f"{where} did not answer {method} {path} within "
                                          f"{kwargs.get('timeout') or self.timeout_s:.0f} s "
                                          f"({type(exc).__name__}); the task will be retried") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ServiceUnavailableError(f"{where} dropped the connection during {method} {path} "
                                          f"({exc}): it stopped or was restarted mid-batch; "
                                          "nothing was staged, the task will be retried") from exc
        if response.status_code == 409:
            raise ServiceModelMismatchError(f"{where}: {_detail(response)}")
        if response.status_code == 503 and path == "/health":
            return response  # loading or failed: the body says which
        if response.status_code >= 500:
            raise ServiceUnavailableError(f"{where} answered {response.status_code}: {_detail(response)}; "
                                          "the task will be retried")
        if response.status_code >= 400:
            raise ServiceError(f"{where} refused the request ({response.status_code}): {_detail(response)}")
        return response


def _detail(response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return response.text[:500]
