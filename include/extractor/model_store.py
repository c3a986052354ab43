"""Making a model's files available locally, exactly once, verified.

``ensure_model(spec, cache_dir)`` is what the ``ensure_model`` task of a run calls
before any extraction: it fetches the weights into a shared cache directory from

- the Hugging Face Hub (``spec.source`` None or "hf") at ``spec.revision``;
- an S3 prefix (``s3://bucket/prefix``): every object under it, through a boto3
  client the caller passes (the DAG gets it from the Amazon provider's ``S3Hook``);
- a local directory, which is used *in place* (no copy: it is typically a shared
  volume someone provisioned; copying 22 GB per worker would only waste disk).

Guarantees:
- once: a file lock per target, so parallel tasks on one host (or on hosts that share
  the cache volume) download once and the others wait and reuse it;
- atomic: the download goes to a temporary sibling directory that is renamed into
  place only when complete, so a killed task never leaves a half model behind (and the
  next call removes the temporary folder it left);
- verified: a manifest (file -> size, sha256) is written after the download and
  checked on every call; a file the manifest does not list fails the check too. Each call compares sizes and modification times (cheap, even
  for 22 GB); a file whose mtime changed is hashed again. A missing or changed file
  makes the next call download again (``verify="full"`` re-hashes everything).

Pinned: a Hub revision that is a branch or tag (``main``) is first resolved to the commit
sha it points to (``pin_revision``), so the cache entry, the download and the extractor
version name one immutable snapshot; an upstream push is a new version, never a silent
change.

Rollback by environment (the migration guide's switch): ``LLAMA_MODEL_PATH`` set means the
chosen model's weights are loaded from that folder, in place, whatever the spec's source.

The returned directory is what the ``hf`` backend loads with ``local_files_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from extractor.errors import ModelSourceError
from extractor.spec import ExtractorSpec

log = logging.getLogger(__name__)

MANIFEST = ".receipt-manifest.json"
LOCK_TIMEOUT_S = 6 * 3600  # a 90B download can take hours; waiting tasks must outlast it
# What a model needs to load, and nothing else (Llama repos also carry original/*.pth).
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
HUB_IGNORE_PATTERNS = ["original/*", "*.pth", "*.bin", "*.msgpack", "*.h5", "*.onnx"]


MODEL_PATH_ENV = "LLAMA_MODEL_PATH"
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


def default_cache_dir() -> Path:
    """``$RECEIPT_MODEL_CACHE`` or ./var/models."""
    return Path(os.environ.get("RECEIPT_MODEL_CACHE", "./var/models"))


def ensure_model(spec: ExtractorSpec, cache_dir: str | os.PathLike | None = None, *,
                 token: str | None = None, s3_client: Any = None,
                 hub_download: Callable[..., Any] | None = None, hub_api: Any = None,
                 verify: Literal["quick", "full"] = "quick") -> Path | None:
    """The local directory holding ``spec``'s model (fetched if needed), or None (no weights).

    ``hub_download`` defaults to ``huggingface_hub.snapshot_download`` and ``hub_api`` to
    ``huggingface_hub.HfApi()`` (tests pass stand-ins); ``token`` is the Hub token for gated
    repos such as Llama 3.2. A branch revision is pinned to its commit first.
    """
    if spec.backend == "ocr":
        return None  # the OCR models ship inside the rapidocr wheel
    override = model_path_override()
    if override is not None:
        return _use_local(override, verify)
    spec = pin_revision(spec, token=token, hub_api=hub_api)
    source = (spec.source or "hf").strip()
    if source != "hf" and not source.startswith("s3://"):
        return _use_local(Path(source), verify)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / target_name(spec)

    from filelock import FileLock

    _remove_orphans(target, wait=False)  # a killed download's folder, if no one downloads now
    # Fast path, no lock: a complete target never changes except through this function.
    if _valid(target, verify):
        return target
    with FileLock(str(target) + ".lock", timeout=LOCK_TIMEOUT_S):
        if _valid(target, verify):  # another process finished while we waited
            return target
        _remove_orphans(target, wait=True)
        if source == "hf":
            fetch = lambda tmp: _fetch_hub(spec, tmp, token, hub_download)  # noqa: E731
        else:
            fetch = lambda tmp: _fetch_s3(source, tmp, s3_client)  # noqa: E731
        _download_atomically(target, fetch)
    return target


def _remove_orphans(target: Path, *, wait: bool) -> list[Path]:
    """Delete the temporary folders a killed download left beside ``target``
    (``<name>.tmp-*``, ``<name>.stale-*``). Only under the target's lock: whoever made
    them held it, so holding it means they are gone. ``wait=True``: the caller holds the
    lock already; ``wait=False``: take it only if free (a download under way is left be)."""
    import glob

    from filelock import FileLock, Timeout

    pattern = glob.escape(target.name)
    leftovers = sorted(p for suffix in (".tmp-*", ".stale-*")
                       for p in target.parent.glob(pattern + suffix) if p.is_dir())
    if not leftovers:
        return []
    if not wait:
        try:
            with FileLock(str(target) + ".lock", timeout=0):
                return _remove_orphans(target, wait=True)
        except Timeout:
            return []
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left by an interrupted download", path)
    return leftovers


def model_path_override() -> Path | None:
    """The folder ``$LLAMA_MODEL_PATH`` names, or None when unset; a missing folder is an error."""
    value = os.environ.get(MODEL_PATH_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ModelSourceError(f"{MODEL_PATH_ENV}={value}: no such model folder")
    return path


def needs_pinning(spec: ExtractorSpec) -> bool:
    """Weights from the Hub at a branch or tag (not a commit), with no LLAMA_MODEL_PATH."""
    return (spec.backend != "ocr" and (spec.source or "hf").strip() == "hf"
            and not COMMIT_SHA.fullmatch(spec.revision or "main")
            and not os.environ.get(MODEL_PATH_ENV, "").strip())


def pin_revision(spec: ExtractorSpec, *, token: str | None = None, hub_api: Any = None) -> ExtractorSpec:
    """``spec`` with its Hub revision (a branch or tag; None means "main") replaced by the
    commit sha it points to now. Specs already on a sha, weights from S3 or a folder, and
    the OCR reader come back unchanged, as does everything while ``LLAMA_MODEL_PATH`` is set."""
    if not needs_pinning(spec):
        return spec
    revision = spec.revision or "main"
    if hub_api is None:
        from huggingface_hub import HfApi

        hub_api = HfApi()
    try:
        sha = hub_api.model_info(spec.model_id, revision=revision, token=token).sha
    except Exception as exc:  # the Hub client raises many types (HTTP, offline, gated, ...)
        raise ModelSourceError(f"cannot resolve revision {revision!r} of {spec.model_id} to a commit "
                               f"({type(exc).__name__}: {exc}); pin a commit sha in the spec") from exc
    if not sha or not COMMIT_SHA.fullmatch(sha):
        raise ModelSourceError(f"the Hub gave no commit sha for {spec.model_id}@{revision}: {sha!r}")
    log.info("%s@%s is commit %s", spec.model_id, revision, sha)
    return spec.model_copy(update={"revision": sha})


def target_name(spec: ExtractorSpec) -> str:
    """``<model id>@<revision>`` made filesystem-safe; S3 sources add a hash of the prefix."""
    name = f"{_safe(spec.model_id)}@{_safe(spec.revision or 'main')}"
    if spec.source and spec.source.startswith("s3://"):
        name += "-" + hashlib.sha256(spec.source.encode()).hexdigest()[:10]
    return name


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", text).strip(".") or "_"


# --- sources -------------------------------------------------------------------
def _fetch_hub(spec: ExtractorSpec, dest: Path, token: str | None, hub_download) -> None:
    if hub_download is None:
        from huggingface_hub import snapshot_download as hub_download
    allow = HUB_ALLOW_PATTERNS + (["*.py"] if spec.trust_remote_code else [])
    try:
        hub_download(repo_id=spec.model_id, revision=spec.revision or "main", token=token,
                     allow_patterns=allow, ignore_patterns=HUB_IGNORE_PATTERNS, local_dir=str(dest))
    except Exception as exc:  # the Hub client raises many types (HTTP, offline, gated, ...)
        raise ModelSourceError(f"cannot download {spec.model_id}@{spec.revision or 'main'} "
                               f"from the Hub: {type(exc).__name__}: {exc}") from exc
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # snapshot_download's own bookkeeping


def _fetch_s3(uri: str, dest: Path, client) -> None:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if client is None:
        import boto3

        client = boto3.client("s3")
    listed = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix + "/" if prefix else ""):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                rel = key[len(prefix):].lstrip("/") if prefix else key
                if not rel or rel.endswith("/"):
                    continue  # "directory" placeholder objects
                path = dest / rel
                if not path.resolve().is_relative_to(dest.resolve()):
                    raise ModelSourceError(f"refusing S3 key outside the target: {key}")
                path.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(path))
                if path.stat().st_size != obj["Size"]:
                    raise ModelSourceError(f"s3://{bucket}/{key}: got {path.stat().st_size} bytes, "
                                           f"listed {obj['Size']}")
                listed += 1
    except ModelSourceError:
        raise
    except Exception as exc:  # botocore ClientError, EndpointConnectionError, NoCredentials, ...
        raise ModelSourceError(f"cannot download {uri}: {type(exc).__name__}: {exc}") from exc
    if listed == 0:
        raise ModelSourceError(f"no objects under {uri}")


def _use_local(path: Path, verify: str) -> Path:
    """A local model folder, used in place. A manifest there (one this module wrote, e.g.
    a copied cache entry) is verified; a mismatch cannot be repaired from here."""
    if not path.is_dir():
        raise ModelSourceError(f"model source {path} is not a directory")
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"model source {path} has no config.json")
    if (path / MANIFEST).exists() and not _valid(path, verify):
        raise ModelSourceError(f"model files in {path} do not match their manifest")
    return path


# --- download, manifest ------------------------------------------------------------
def _download_atomically(target: Path, fetch: Callable[[Path], None]) -> None:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        fetch(tmp)
        write_manifest(tmp)
        if target.exists():  # stale or corrupt: move aside, then replace
            stale = target.with_name(f"{target.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(target)
        log.info("model ready in %s (%.1f s)", target, time.perf_counter() - t0)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """Record every file's size, sha256 and mtime under ``root`` in its manifest."""
    entries = {}
    for path in _files(root):
        stat = path.stat()
        entries[path.relative_to(root).as_posix()] = {
            "size": stat.st_size, "sha256": _sha256(path), "mtime_ns": stat.st_mtime_ns}
    if not entries:
        raise ModelSourceError(f"no files downloaded into {root}")
    (root / MANIFEST).write_text(json.dumps({"files": entries}, indent=1, sort_keys=True))
    return entries


def _valid(root: Path, verify: str = "quick") -> bool:
    """Does ``root`` hold exactly the files of its manifest, unchanged?"""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        entries = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError):
        log.warning("unreadable manifest in %s", root)
        return False
    unlisted = sorted({p.relative_to(root).as_posix() for p in _files(root)} - set(entries))
    if unlisted:  # the manifest is the whole model: an extra file is not ours to load
        log.warning("model folder %s holds files its manifest does not list: %s", root, unlisted[:5])
        return False
    for rel, entry in entries.items():
        path = root / rel
        try:
            stat = path.stat()
        except FileNotFoundError:
            log.warning("model file missing: %s", path)
            return False
        if stat.st_size != entry["size"]:
            log.warning("model file changed size: %s", path)
            return False
        if (verify == "full" or stat.st_mtime_ns != entry["mtime_ns"]) and _sha256(path) != entry["sha256"]:
            log.warning("model file content changed: %s", path)
            return False
    return True
