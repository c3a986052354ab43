"""ensure_model: local folders for real, S3 for real (moto's server over HTTP), the Hub through
a stand-in for ``snapshot_download`` (there is no network here)."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from extractor.errors import ModelSourceError
from extractor.model_store import MANIFEST, default_cache_dir, ensure_model, target_name
from extractor.spec import resolve_spec

BUCKET = "models"
SHA = "abc123" + "0" * 34  # a pinned commit: no Hub lookup


def _spec(**kw):
    base = {"backend": "hf", "model_id": "meta-llama/Tiny-Vision", "revision": SHA}
    return resolve_spec({**base, **kw})


# --- a Hub stand-in: writes a small "snapshot" and logs each call to a file -----------
def fake_snapshot_download(*, repo_id, revision, token, allow_patterns, ignore_patterns, local_dir,
                           calls_file, delay=0.0):
    """Stands in for huggingface_hub.snapshot_download (no network in tests)."""
    with open(calls_file, "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "repo_id": repo_id, "revision": revision,
                             "token": token, "allow": allow_patterns, "ignore": ignore_patterns,
                             "local_dir": local_dir}) + "\n")
    time.sleep(delay)
    root = Path(local_dir)
    (root / "config.json").write_text(json.dumps({"model_type": "mllama", "repo": repo_id}))
    (root / "model.safetensors").write_bytes(b"\x00\x01weights" * 1000)
    (root / ".cache" / "huggingface").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "x.metadata").write_text("hub bookkeeping")
    return local_dir


def _hub(calls_file, delay=0.0):
    import functools

    return functools.partial(fake_snapshot_download, calls_file=str(calls_file), delay=delay)


def _calls(calls_file) -> list[dict]:
    path = Path(calls_file)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_hub_download_once_into_revision_named_dir_with_manifest(tmp_path):
    calls = tmp_path / "calls.jsonl"
    spec = _spec()
    path = ensure_model(spec, tmp_path / "cache", token="hf_x", hub_download=_hub(calls))
    assert path == tmp_path / "cache" / f"meta-llama--Tiny-Vision@{SHA}"
    (call,) = _calls(calls)
    assert (call["repo_id"], call["revision"], call["token"]) == ("meta-llama/Tiny-Vision", SHA, "hf_x")
    assert "*.safetensors" in call["allow"] and "*.py" not in call["allow"]
    assert "original/*" in call["ignore"]
    assert Path(call["local_dir"]).parent == path.parent and Path(call["local_dir"]) != path  # temp sibling
    manifest = json.loads((path / MANIFEST).read_text())["files"]
    assert set(manifest) == {"config.json", "model.safetensors"}  # no .cache bookkeeping
    assert manifest["model.safetensors"]["size"] == 9000
    assert not (path / ".cache").exists()
    # second call: a no-op
    assert ensure_model(spec, tmp_path / "cache", hub_download=_hub(calls)) == path
    assert len(_calls(calls)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]


def test_remote_code_models_also_fetch_python_files(tmp_path):
    calls = tmp_path / "calls.jsonl"
    spec = resolve_spec({"preset": "llamavision-1b-legacy", "revision": SHA})
    ensure_model(spec, tmp_path, hub_download=_hub(calls))
    assert "*.py" in _calls(calls)[0]["allow"]


@pytest.mark.parametrize("damage", ["corrupt", "delete", "truncate"])
def test_changed_or_missing_file_is_downloaded_again(tmp_path, damage):
    calls = tmp_path / "calls.jsonl"
    path = ensure_model(_spec(), tmp_path / "c", hub_download=_hub(calls))
    weights = path / "model.safetensors"
    original = weights.read_bytes()
    if damage == "corrupt":  # same size, other bytes: caught by the hash (its mtime moved)
        weights.write_bytes(b"\xff" * len(original))
    elif damage == "delete":
        weights.unlink()
    else:
        weights.write_bytes(original[:10])
    assert ensure_model(_spec(), tmp_path / "c", hub_download=_hub(calls)) == path
    assert len(_calls(calls)) == 2
    assert weights.read_bytes() == original


def test_full_verify_catches_corruption_that_kept_the_mtime(tmp_path):
    calls = tmp_path / "calls.jsonl"
    path = ensure_model(_spec(), tmp_path, hub_download=_hub(calls))
    weights = path / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"\xee" * stat.st_size)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # bit rot leaves no trace
    ensure_model(_spec(), tmp_path, hub_download=_hub(calls))
    assert len(_calls(calls)) == 1  # the quick check trusts size + mtime
    ensure_model(_spec(), tmp_path, hub_download=_hub(calls), verify="full")
    assert len(_calls(calls)) == 2 and weights.read_bytes() == b"\x00\x01weights" * 1000


def test_failed_download_leaves_nothing_behind(tmp_path):
    def offline(**kwargs):
        Path(kwargs["local_dir"], "config.json").write_text("{}")  # a partial download
        raise ConnectionError("no network")

    with pytest.raises(ModelSourceError, match="no network"):
        ensure_model(_spec(), tmp_path, hub_download=offline)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def _worker(cache, calls_file, queue):
    from extractor.model_store import ensure_model as ensure

    path = ensure(_spec(), cache, hub_download=_hub(calls_file, delay=1.0))
    queue.put(str(path))


def test_parallel_processes_download_exactly_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    calls = tmp_path / "calls.jsonl"
    procs = [ctx.Process(target=_worker, args=(tmp_path / "cache", calls, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    paths = {queue.get(timeout=5) for _ in procs}
    assert len(paths) == 1
    assert len(_calls(calls)) == 1


def test_local_folder_is_used_in_place(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert ensure_model(_spec(source=str(folder)), tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ModelSourceError, match="not a directory"):
        ensure_model(_spec(source=str(tmp_path / "missing")), tmp_path / "cache")
    (folder / "config.json").unlink()
    with pytest.raises(ModelSourceError, match="no config.json"):
        ensure_model(_spec(source=str(folder)), tmp_path / "cache")


def test_local_folder_with_a_manifest_is_verified(tmp_path):
    from extractor.model_store import write_manifest

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "w.safetensors").write_bytes(b"abc")
    write_manifest(folder)
    assert ensure_model(_spec(source=str(folder)), tmp_path) == folder
    (folder / "w.safetensors").write_bytes(b"abcd")
    with pytest.raises(ModelSourceError, match="manifest"):
        ensure_model(_spec(source=str(folder)), tmp_path)


def test_ocr_needs_no_weights_and_cache_dir_comes_from_env(tmp_path, monkeypatch):
    assert ensure_model(resolve_spec("ocr"), tmp_path) is None
    monkeypatch.setenv("RECEIPT_MODEL_CACHE", str(tmp_path / "m"))
    assert default_cache_dir() == tmp_path / "m"
    monkeypatch.delenv("RECEIPT_MODEL_CACHE")
    assert default_cache_dir() == Path("./var/models")


def test_target_names_are_safe_and_distinguish_s3_prefixes():
    a = target_name(_spec(source="s3://b/models/v1"))
    b = target_name(_spec(source="s3://b/models/v2"))
    assert a != b and "/" not in a and a.startswith("meta-llama--Tiny-Vision@" + SHA + "-")
    assert target_name(_spec(revision=None)) == "meta-llama--Tiny-Vision@main"


# --- S3, for real: moto's server over HTTP ---------------------------------------
@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    requests: list[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: requests.append(model.name))
    client.requests = requests
    return client


def _upload(client, folder: Path, prefix: str) -> dict[str, int]:
    sizes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            client.upload_file(str(path), BUCKET, f"{prefix}/{rel}")
            sizes[rel] = path.stat().st_size
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/", Body=b"")  # a console "folder" marker
    return sizes


def test_s3_prefix_downloaded_verified_then_reused(s3, tiny_llava_dir, tmp_path):
    sizes = _upload(s3, tiny_llava_dir, "llava/v1")
    spec = _spec(model_id="tiny/llava", revision="v1", source=f"s3://{BUCKET}/llava/v1")
    s3.requests.clear()
    path = ensure_model(spec, tmp_path, s3_client=s3)
    assert s3.requests.count("GetObject") == len(sizes)
    manifest = json.loads((path / MANIFEST).read_text())["files"]
    assert {k: v["size"] for k, v in manifest.items()} == sizes
    for rel in sizes:
        assert (path / rel).read_bytes() == (tiny_llava_dir / rel).read_bytes()
    mtimes = {rel: (path / rel).stat().st_mtime_ns for rel in sizes}
    s3.requests.clear()
    assert ensure_model(spec, tmp_path, s3_client=s3) == path
    assert s3.requests == []  # nothing listed, nothing fetched
    assert {rel: (path / rel).stat().st_mtime_ns for rel in sizes} == mtimes
    # what ensure_model returns is what the hf backend loads, offline
    from extractor.backends.hf import HFBackend

    backend = HFBackend(resolve_spec({"backend": "hf", "model_id": "tiny/llava", "max_new_tokens": 2}),
                        model_dir=path)
    assert type(backend.model).__name__ == "LlavaForConditionalGeneration"


def test_s3_errors_are_model_source_errors(s3, tmp_path):
    with pytest.raises(ModelSourceError, match="no objects"):
        ensure_model(_spec(source=f"s3://{BUCKET}/nothing/here"), tmp_path, s3_client=s3)
    with pytest.raises(ModelSourceError, match="NoSuchBucket"):
        ensure_model(_spec(source="s3://no-such-bucket/x"), tmp_path, s3_client=s3)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_real_snapshot_download_offline_is_a_model_source_error(tmp_path):
    """The real huggingface_hub client, in the suite's offline mode (HF_HUB_OFFLINE=1):
    nothing cached, so it must fail as a run-level ModelSourceError and leave nothing."""
    with pytest.raises(ModelSourceError, match=f"cannot download meta-llama/Tiny-Vision@{SHA}"):
        ensure_model(_spec(), tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# --- pinning a branch to its commit: the Hub call is MOCKED (no network here) ----------
class FakeHubApi:
    """Stands in for ``huggingface_hub.HfApi`` (the Hub cannot be reached from the tests):
    ``model_info`` answers a fixed commit for a branch, as the Hub does."""

    def __init__(self, sha="0123456789abcdef0123456789abcdef01234567", fail=None):
        self.sha, self.fail, self.calls = sha, fail, []

    def model_info(self, repo_id, revision=None, token=None):
        self.calls.append((repo_id, revision, token))
        if self.fail:
            raise self.fail
        from types import SimpleNamespace

        return SimpleNamespace(sha=self.sha)


def test_a_branch_is_pinned_to_its_commit_before_download(tmp_path):
    from extractor.model_store import pin_revision

    api, calls = FakeHubApi(), tmp_path / "calls.jsonl"
    spec = _spec(revision="main")
    pinned = pin_revision(spec, token="hf_x", hub_api=api)
    assert pinned.revision == api.sha and api.calls == [("meta-llama/Tiny-Vision", "main", "hf_x")]
    assert pinned.version == f"hf:meta-llama/Tiny-Vision@{api.sha}:v1+receipt-json" != spec.version
    path = ensure_model(spec, tmp_path, hub_download=_hub(calls), hub_api=api)
    assert path.name == f"meta-llama--Tiny-Vision@{api.sha}"  # the cache entry names the commit
    assert _calls(calls)[0]["revision"] == api.sha  # and the download asks for the commit
    assert pin_revision(pinned, hub_api=api) is pinned  # a sha is not looked up again
    assert len(api.calls) == 2  # once by pin_revision above, once inside ensure_model


def test_specs_that_need_no_pinning_do_not_call_the_hub(tmp_path):
    from extractor.model_store import pin_revision

    api = FakeHubApi(fail=AssertionError("no Hub call expected"))
    for spec in (resolve_spec("ocr"), _spec(source="s3://b/m/v1", revision="v1"),
                 _spec(source=str(tmp_path), revision="main")):
        assert pin_revision(spec, hub_api=api) is spec


def test_an_unresolvable_branch_is_a_model_source_error():
    from extractor.model_store import pin_revision

    with pytest.raises(ModelSourceError, match="cannot resolve revision 'main' .* pin a commit sha"):
        pin_revision(_spec(revision="main"), hub_api=FakeHubApi(fail=OSError("offline")))


# --- LLAMA_MODEL_PATH: rollback by environment ---------------------------------------
def test_llama_model_path_loads_the_chosen_model_from_that_folder(tmp_path, monkeypatch):
    folder = tmp_path / "llama-previous"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("LLAMA_MODEL_PATH", str(folder))
    api = FakeHubApi(fail=AssertionError("no Hub call while LLAMA_MODEL_PATH is set"))
    assert ensure_model(_spec(revision="main"), tmp_path / "cache", hub_api=api) == folder
    assert not (tmp_path / "cache").exists()
    assert ensure_model(resolve_spec("ocr"), tmp_path) is None  # no weights: nothing to load
    monkeypatch.setenv("LLAMA_MODEL_PATH", str(tmp_path / "gone"))
    with pytest.raises(ModelSourceError, match=r"^LLAMA_MODEL_PATH=.*gone: no such model folder$"):
        ensure_model(_spec(), tmp_path / "cache")


# --- crash leftovers and unlisted files ------------------------------------------------
def slow_snapshot_download(*, local_dir, ready_file, **_):
    """A Hub stand-in that writes part of a model, says so, then hangs (to be killed)."""
    (Path(local_dir) / "config.json").write_text("{}")
    Path(ready_file).write_text(local_dir)
    time.sleep(600)


def _download_until_killed(cache, ready_file):
    import functools

    from extractor.model_store import ensure_model as ensure

    ensure(_spec(), cache, hub_download=functools.partial(slow_snapshot_download, ready_file=ready_file))


def test_a_download_killed_with_sigkill_leaves_a_folder_the_next_call_removes(tmp_path):
    import signal

    ready = tmp_path / "ready"
    proc = multiprocessing.get_context("spawn").Process(
        target=_download_until_killed, args=(tmp_path / "cache", str(ready)))
    proc.start()
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline and proc.is_alive()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    orphan = Path(ready.read_text())
    assert orphan.is_dir() and orphan.name.startswith(target_name(_spec()) + ".tmp-")

    calls = tmp_path / "calls.jsonl"
    path = ensure_model(_spec(), tmp_path / "cache", hub_download=_hub(calls))

    assert not orphan.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]


def test_leftovers_beside_a_valid_model_are_removed_unless_a_download_holds_the_lock(tmp_path):
    from filelock import FileLock

    calls = tmp_path / "calls.jsonl"
    path = ensure_model(_spec(), tmp_path, hub_download=_hub(calls))
    leftover = path.with_name(path.name + ".tmp-4242-1")  # what a SIGKILLed download leaves
    (leftover / "sub").mkdir(parents=True)
    with FileLock(str(path) + ".lock"):  # another process is downloading: its folder stays
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_ensure_quietly, args=(tmp_path, str(calls)))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0 and leftover.exists()
    assert ensure_model(_spec(), tmp_path, hub_download=_hub(calls)) == path
    assert not leftover.exists()
    assert len(_calls(calls)) == 1  # the model itself was never fetched again


def _ensure_quietly(cache, calls_file):
    from extractor.model_store import ensure_model as ensure

    ensure(_spec(), cache, hub_download=_hub(calls_file))


def test_a_file_the_manifest_does_not_list_fails_the_check(tmp_path):
    calls = tmp_path / "calls.jsonl"
    path = ensure_model(_spec(), tmp_path / "cache", hub_download=_hub(calls))
    (path / "extra.safetensors").write_bytes(b"not from the source")

    assert ensure_model(_spec(), tmp_path / "cache", hub_download=_hub(calls)) == path
    assert len(_calls(calls)) == 2  # fetched again: the cache held something unlisted
    assert not (path / "extra.safetensors").exists()

    local = tmp_path / "provisioned"
    local.mkdir()
    (local / "config.json").write_text("{}")
    from extractor.model_store import write_manifest

    write_manifest(local)
    (local / "injected.py").write_text("import os")
    with pytest.raises(ModelSourceError, match="do not match their manifest"):
        ensure_model(resolve_spec({"backend": "hf", "model_id": "x/y", "source": str(local)}))
