"""The resident extraction service: a real FastAPI/uvicorn server on a free local port,
the tiny real Mllama from ``extractor.testing.tiny_models``, and the tasks' real client.

What is checked: the contract (one result per receipt, same order and ids, reasons for
failures, and the same results as the in-process backend); the load counter (a model is
loaded once, a second spec reloads or is refused); batching across concurrent requests
(receipt-level: three one-receipt requests become one batch, a request larger than the
batch is split); and every way the client can fail to get an answer (refused connection,
a server that never answers, a connection dropped mid-request) gives a clear error.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from extractor.images import ReceiptInput
from extractor.spec import ExtractorSpec
from extractor.testing.synthetic import render_receipt


def _spec(model_dir, **overrides) -> ExtractorSpec:
    data = {"backend": "hf", "model_id": "tiny/mllama", "revision": "test", "source": str(model_dir),
            "dtype": "float32", "batch_size": 4, "max_new_tokens": 6, "device_map": None, "grammar": "none"}
    return ExtractorSpec(**{**data, **overrides})


def _inputs(n: int, start: int = 0) -> list[ReceiptInput]:
    return [ReceiptInput.from_bytes(render_receipt(seed=start + i)[0], f"mem://r{start + i}.jpg")
            for i in range(n)]


class LiveService:
    """The service's app on uvicorn in a thread, with its batcher and resident model."""

    def __init__(self, *, on_other_model="reload", max_wait_s=0.05):
        import uvicorn

        from extractor.serving.app import create_app
        from extractor.serving.batcher import Batcher, ResidentModel

        self.model = ResidentModel(on_other_model=on_other_model)
        self.batcher = Batcher(self.model, max_wait_s=max_wait_s).start()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.batcher), host="127.0.0.1", port=self.port,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.batcher.close()
        from extractor.backends import unload_all

        unload_all()

    def record_batches(self) -> list[int]:
        """Spy on the loaded backend's forward step: the sizes of the batches it runs."""
        sizes: list[int] = []
        backend = self.model.backend
        forward = backend._forward

        def recording(images):
            sizes.append(len(images))
            return forward(images)

        backend._forward = recording
        return sizes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(url, spec, model_dir=None, timeout_s=60.0):
    from extractor.serving.client import ServiceBackend

    return ServiceBackend.connect(url, spec, model_dir, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def model_dir(tiny_mllama_dir):
    return str(tiny_mllama_dir)


def test_results_match_the_in_process_backend_and_the_model_loads_once(model_dir):
    from extractor.backends import backend_class

    spec = _spec(model_dir)
    inputs = _inputs(3)
    inputs.insert(1, ReceiptInput.from_bytes(b"\xff\xd8\xff\xe0 truncated", "mem://broken.jpg"))
    with LiveService() as service:
        client = _client(service.url, spec, model_dir)
        assert client.health()["status"] == "idle" and client.health()["loads"] == 0
        first = client.extract(inputs)
        second = _client(service.url, spec, model_dir).extract(inputs[:2])
        health = client.health()
    assert [r.receipt_id for r in first] == [x.receipt_id for x in inputs]
    assert first[1].status == "failed" and first[1].reason.startswith("bad image")
    assert health["loads"] == 1 and health["extractor_version"] == spec.version
    assert client.model_load_s > 0  # this client's first request waited for the load

    def strip(result):
        return {**result.model_dump(), "timings": None}

    assert [strip(r) for r in second] == [strip(r) for r in first[:2]]
    local = backend_class("hf")(spec, model_dir=model_dir).extract(inputs)
    assert [strip(r) for r in first] == [strip(r) for r in local]


def test_concurrent_requests_share_batches_and_big_ones_are_split(model_dir):
    spec = _spec(model_dir, batch_size=4)
    # a generous wait: on a busy 2-core machine the three requests may arrive a second apart
    with LiveService(max_wait_s=3.0) as service:
        _client(service.url, spec, model_dir).extract(_inputs(1, start=50))  # load first
        sizes = service.record_batches()
        clients = [_client(service.url, spec, model_dir) for _ in range(3)]
        singles = [_inputs(1, start=i) for i in range(3)]
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(client.extract, one) for client, one in zip(clients, singles, strict=True)]
            results = [f.result() for f in futures]
        assert sizes == [3], "three one-receipt requests within the wait form one batch"
        big = _inputs(6, start=10)
        out = _client(service.url, spec, model_dir).extract(big)
        assert sizes == [3, 4, 2]
    assert [r[0].receipt_id for r in results] == [_inputs(1, start=i)[0].receipt_id for i in range(3)]
    assert [r.receipt_id for r in out] == [x.receipt_id for x in big]


def test_another_spec_reloads_or_is_refused_with_a_clear_error(model_dir):
    from extractor.serving.protocol import ServiceModelMismatchError

    first, other = _spec(model_dir), _spec(model_dir, max_new_tokens=3)
    with LiveService() as service:
        _client(service.url, first, model_dir).extract(_inputs(1))
        reloading = _client(service.url, other, model_dir)
        reloading.extract(_inputs(1))
        assert reloading.health()["loads"] == 2 and reloading.model_load_s > 0
        assert reloading.health()["spec"]["max_new_tokens"] == 3
    with LiveService(on_other_model="refuse") as service:
        _client(service.url, first, model_dir).extract(_inputs(1))
        with pytest.raises(ServiceModelMismatchError, match="does not switch models"):
            _client(service.url, other, model_dir)
        assert _client(service.url, first, model_dir).health()["loads"] == 1


def test_unreachable_service_is_a_clear_retryable_error():
    from extractor.serving.protocol import ServiceUnavailableError

    with pytest.raises(ServiceUnavailableError, match="unreachable.*will be retried") as err:
        _client(f"http://127.0.0.1:{_free_port()}", _spec("/nowhere"))
    assert err.value.retryable


def _raw_server(behaviour):
    """A TCP server that answers every connection with ``behaviour(conn)``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def loop():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=behaviour, args=(conn, stop), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop, sock


def test_a_silent_service_times_out_and_a_dropped_connection_is_named():
    from extractor.serving.client import ServiceBackend
    from extractor.serving.protocol import ServiceUnavailableError

    def silent(conn, stop):
        stop.wait(5)
        conn.close()

    def drop(conn, stop):
        conn.recv(65536)
        conn.close()  # as a killed process does: no response at all

    for behaviour, message in ((silent, "did not answer POST /extract within 1 s"),
                               (drop, "dropped the connection during POST /extract")):
        url, stop, sock = _raw_server(behaviour)
        try:
            client = ServiceBackend(url, _spec("/nowhere"), None, timeout_s=1.0)
            with pytest.raises(ServiceUnavailableError, match=message):
                client.extract(_inputs(1))
        finally:
            stop.set()
            sock.close()


def test_unreadable_uri_items_come_back_as_failed_results(model_dir, tmp_path):
    import httpx

    spec = _spec(model_dir)
    good = _inputs(1)[0]
    path = tmp_path / "r.jpg"
    path.write_bytes(good.data)
    items = [{"receipt_id": good.receipt_id, "source": str(path), "uri": f"file://{path}"},
             {"receipt_id": "0" * 64, "source": "x", "uri": str(path)},
             {"receipt_id": "1" * 64, "source": "y", "uri": str(tmp_path / "missing.jpg")}]
    with LiveService() as service:
        reply = httpx.post(f"{service.url}/extract", timeout=60, json={
            "spec": spec.model_dump(mode="json"), "model_dir": model_dir, "receipts": items}).json()
        bad = httpx.post(f"{service.url}/extract", timeout=60, json={
            "spec": {"backend": "nope"}, "receipts": []})
    from extractor.schema import ExtractionResult

    results = [ExtractionResult.model_validate_json(line) for line in reply["results"]]
    assert [r.receipt_id for r in results] == [i["receipt_id"] for i in items]
    assert results[0].reason is None or not results[0].reason.startswith("service cannot read")
    assert "object changed after discovery" in results[1].reason
    assert results[2].reason.startswith("service cannot read")
    assert bad.status_code == 422 and "invalid extractor spec" in bad.json()["detail"]


def test_cli_has_a_serve_command():
    from extractor.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "ocr", "--port", "8123",
                                      "--on-other-model", "refuse"])
    assert (args.model, args.port, args.on_other_model, args.host) == ("ocr", 8123, "refuse", "127.0.0.1")


def test_the_extract_task_fails_without_retry_on_a_refused_model_and_loads_in_process_without_a_url(
        model_dir, monkeypatch):
    """tasks._extraction_backend: the client branch when the URL is set (a refused model is an
    AirflowFailException: retrying cannot change the service's model), the task's own
    process otherwise (the embedded default)."""
    from airflow.sdk.exceptions import AirflowFailException

    from extractor.pipeline import config, tasks
    from extractor.serving.client import ServiceBackend

    first, other = _spec(model_dir), _spec(model_dir, max_new_tokens=3)
    monkeypatch.delenv("RECEIPT_EXTRACTION_SERVICE_URL", raising=False)
    local, load_s = tasks._extraction_backend(first, model_dir, config.load_config(lambda _k: None))
    assert not isinstance(local, ServiceBackend) and load_s >= 0
    with LiveService(on_other_model="refuse") as service:
        _client(service.url, first, model_dir).extract(_inputs(1))
        monkeypatch.setenv("RECEIPT_EXTRACTION_SERVICE_URL", service.url)
        cfg = config.load_config(lambda _k: None)
        backend, load_s = tasks._extraction_backend(first, model_dir, cfg)
        assert isinstance(backend, ServiceBackend) and load_s == 0.0
        with pytest.raises(AirflowFailException, match="does not switch models"):
            tasks._extraction_backend(other, model_dir, cfg)


def test_start_up_loads_the_model_and_warms_it_with_a_full_batch_of_samples(model_dir):
    import json

    from extractor.serving.app import _preloader
    from extractor.serving.batcher import ResidentModel

    resident = ResidentModel()
    spec = _spec(model_dir, batch_size=3)
    sizes: list[int] = []
    from extractor.backends.hf import HFBackend

    original = HFBackend._forward

    def recording(self, images):
        sizes.append(len(images))
        return original(self, images)

    HFBackend._forward = recording
    try:
        _preloader(resident, json.dumps(spec.model_dump(mode="json")), model_dir, None, True)()
    finally:
        HFBackend._forward = original
        from extractor.backends import unload_all

        unload_all()
    assert (resident.status, resident.loads, resident.spec) == ("ready", 1, spec)
    assert sizes == [3], "one batch of the spec's size"
