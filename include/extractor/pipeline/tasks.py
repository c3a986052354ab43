"""The bodies of the ``receipts_daily`` tasks: each DAG task is one call to a function here.

This is the one module of the library that talks to Airflow (the run context, Variables,
connections, hooks, the fail exception); Airflow is imported inside the functions, so
importing this module (which the DAG file does at parse time) stays cheap. Everything
else it calls (discovery, backends, staging, validation, warehouse) is framework-free.

Idempotency: every write is keyed by (receipt id, extractor version) and a run only
extracts ids the warehouse does not yet hold for its version, so re-running or
backfilling a day converges to the same warehouse state.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from extractor.pipeline import config
from extractor.pipeline.sources import discovery

log = logging.getLogger(__name__)

Notifier = Callable[[str, dict], None]
ALERT_LEVEL = {"alert": "warning", "fail": "error"}  # validation decision -> alert level


# ----------------------------------------------------------------------------- Airflow glue

def _context() -> dict[str, Any]:
    from airflow.sdk import get_current_context

    return get_current_context()


def _variable(key: str) -> Any:
    from airflow.sdk import Variable

    return Variable.get(key, default=None)


def _connection(conn_id: str | None):
    """The Airflow connection, or None when it is not defined."""
    if not conn_id:
        return None
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _fail(message: str) -> Exception:
    """A run-level failure that must not be retried (retrying cannot fix it)."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


def load_config() -> config.PipelineConfig:
    return config.load_config(
        _variable, warehouse_conn_exists=_connection(config.WAREHOUSE_CONN_ID) is not None)


_SECRETS: set[str] = set()  # secret values this process has seen: redacted from every alert


def mask_secrets(values: Iterable[str]) -> None:
    """Hide ``values`` from task logs (Airflow's secrets masker) and from alerts."""
    from airflow.sdk.log import mask_secret

    for value in values:
        if value and value not in _SECRETS:
            _SECRETS.add(value)
            mask_secret(value)


def warehouse_url(cfg: config.PipelineConfig) -> str:
    """The env/Variable URL, or the ``receipts_warehouse`` connection's own URI (its extra
    rides along as the query: libpq options such as ``sslmode`` reach the server, the
    Postgres dialect drops the Airflow-only keys). Its password is registered with the
    secrets masker before the URL goes anywhere."""
    from extractor.redaction import url_secrets

    if cfg.warehouse_url:
        mask_secrets(url_secrets(cfg.warehouse_url))
        return cfg.warehouse_url
    conn = _connection(config.WAREHOUSE_CONN_ID)
    if conn is None:
        raise _fail(f"connection {config.WAREHOUSE_CONN_ID!r} disappeared")
    url = conn.get_uri()
    mask_secrets([conn.password or "", *url_secrets(url)])
    return url


def open_warehouse(cfg: config.PipelineConfig):
    from airflow.sdk.exceptions import AirflowException

    from extractor.errors import WarehouseBusyError
    from extractor.pipeline.warehouse import open_warehouse as _open

    url = warehouse_url(cfg)
    options = {"lock_timeout_s": cfg.warehouse_lock_timeout_s} if url.startswith("duckdb") else {}
    try:
        warehouse = _open(url, **options)
    except WarehouseBusyError as exc:  # one line, no driver traceback; the task retries
        raise AirflowException(str(exc)) from None
    warehouse.ensure_schema()
    return warehouse


def s3_client(cfg: config.PipelineConfig):
    """boto3 S3 client from the Amazon provider's hook (endpoint_url from the connection's
    extra, so MinIO / any S3-compatible store works)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    conn_id = cfg.s3_conn_id
    if conn_id is None:
        conn_id = next((c for c in config.DEFAULT_S3_CONN_IDS if _connection(c) is not None),
                       config.DEFAULT_S3_CONN_IDS[-1])
    return S3Hook(aws_conn_id=conn_id).get_conn()


def _hub_token() -> str | None:
    """The Hub token of the ``huggingface_default`` connection (gated repos such as Llama 3.2)."""
    hf_conn = _connection(config.HF_CONN_ID)
    return hf_conn.password if hf_conn is not None and hf_conn.password else None


def _spec(extractor: dict[str, Any]):
    from extractor.spec import ExtractorSpec

    return ExtractorSpec(**extractor["spec"])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ----------------------------------------------------------------------------- tasks

def resolve_extractor() -> dict[str, Any]:
    """DAG-run param ``extractor`` > ``model`` of the Variable ``receipts_config`` (old:
    ``receipt_extractor``) > env RECEIPT_MODEL > the production default preset. A Hub branch
    is resolved to its commit; the returned spec is pinned for the whole run (XCom). The
    param may not choose code or repositories (``spec.resolve_run_override``)."""
    from extractor.errors import ConfigError
    from extractor.settings import CONFIG_VARIABLE
    from extractor.spec import DEFAULT_PRESET, resolve_run_override, resolve_spec

    override = (_context().get("params") or {}).get(config.EXTRACTOR_PARAM)
    if override not in (None, "", {}):
        value, origin = override, "param"  # a DAG-run override: never the active version
    else:
        value, origin = config.extractor_setting(_variable), "setting"  # Variable / env
    if value is None:
        origin = "default"
        log.warning("no model is configured (key 'model' of the Variable %r, or RECEIPT_MODEL): "
                    "using the production default preset %r", CONFIG_VARIABLE, DEFAULT_PRESET)
    try:  # a run's conf picks among presets; code and repositories are the admin's choice
        spec = (resolve_run_override(value, load_config().allowed_model_ids) if origin == "param"
                else resolve_spec(value))
    except ConfigError as exc:
        raise _fail(f"extractor setting {value!r} refused: {exc}" if origin == "param"
                    else f"extractor setting {value!r} does not resolve: {exc}") from exc
    from extractor.model_store import needs_pinning, pin_revision

    if needs_pinning(spec):  # a Hub branch -> its commit, so the version names the snapshot
        spec = pin_revision(spec, token=_hub_token())
    log.info("extractor %s (from the %s)", spec.version, origin)
    return {"spec": spec.model_dump(mode="json"), "version": spec.version, "origin": origin,
            "run_started_at": _utc_now().isoformat()}  # wall clock: the run's first task


def ensure_model(extractor: dict[str, Any]) -> dict[str, str | None]:
    """Make the weights available in the shared model cache: ``{"model_dir": path or None}``
    (None for backends without weights, such as the OCR reader)."""
    from extractor import model_store

    spec, cfg = _spec(extractor), load_config()
    client = s3_client(cfg) if (spec.source or "").startswith("s3://") else None
    path = model_store.ensure_model(spec, cfg.model_cache_dir, token=_hub_token(), s3_client=client)
    log.info("model for %s: %s", spec.version, path or "no weights needed")
    return {"model_dir": str(path) if path is not None else None}


def discover_new_receipts(extractor: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The partition's receipts this extractor version has not seen yet, in batches (the
    return value, mapped over by extract); the counts go to the XCom key ``counts``."""
    ctx, spec, cfg = _context(), _spec(extractor), load_config()
    days = discovery.partition_days(ctx["data_interval_start"], ctx["data_interval_end"])
    client = s3_client(cfg) if cfg.source_is_s3 else None
    warehouse = open_warehouse(cfg)
    try:
        found = discovery.discover(cfg.source, days, extractor_version=spec.version,
                                   already_extracted=warehouse.already_extracted,
                                   batch_size=spec.batch_size * cfg.batches_per_task,
                                   s3_client=client)
        batches, elsewhere = _claim(warehouse, found.batches, spec, cfg, ctx["run_id"])
    finally:
        warehouse.close()
    ctx["ti"].xcom_push(key="counts", value={
        **found.counts(), "new": sum(map(len, batches)), "batches": len(batches),
        "claimed_by_other_run": elsewhere, "partitions": found.partitions, "source": cfg.source})
    return [[r.to_dict() for r in batch] for batch in batches]


def _claim(warehouse, batches, spec, cfg: config.PipelineConfig, run_id: str):
    """The discovered batches this run holds claims on (see sources/claims.py)."""
    from extractor.pipeline.sources.claims import claim_batches

    def claim(ids: list[str]) -> set[str]:
        return warehouse.claim(spec.version, ids, run_id, ttl_s=cfg.claim_ttl_hours * 3600)

    batches, elsewhere = claim_batches(batches, claim, spec.batch_size * cfg.batches_per_task,
                                       receipt_id=lambda r: r.receipt_id)
    if elsewhere:
        log.info("%d receipt(s) are being extracted by another run of this partition: left to it",
                 elsewhere)
    return batches, elsewhere


def extract_batch(batch: Sequence[dict[str, Any]], extractor: dict[str, Any],
                  model: dict[str, str | None]) -> dict[str, Any]:
    """Read a task's receipts, run the backend one model batch at a time (so only one
    batch of decoded images is in memory), staging each model batch as it finishes (a
    retry after a kill extracts only what was not staged), then the task's JSONL file."""
    from extractor.pipeline.sources import batch_staging
    from extractor.pipeline.sources.staging import write_staged

    ctx, spec, cfg = _context(), _spec(extractor), load_config()
    client = s3_client(cfg) if any(b["uri"].startswith("s3://") for b in batch) else None
    t_start = time.perf_counter()
    backend, seconds = None, {"read_s": 0.0, "extract_s": 0.0, "model_load_s": 0.0}

    def extract_chunk(chunk):
        nonlocal backend
        if backend is None:  # only if something is left: in this process, or the service
            backend, seconds["model_load_s"] = _extraction_backend(spec, model["model_dir"], cfg)
        t0 = time.perf_counter()
        chunk_results, inputs = _read_chunk(chunk, spec.version, client,
                                            None if cfg.source_is_s3 else cfg.source)
        t1 = time.perf_counter()
        extracted = iter(backend.extract([x for x in inputs if x is not None]))
        out = [r if r is not None else next(extracted) for r in chunk_results]
        seconds["read_s"] += t1 - t0
        seconds["extract_s"] += time.perf_counter() - t1
        return out

    run_dir = cfg.staging_dir / _safe(ctx["dag"].dag_id) / _safe(ctx["run_id"])
    done = batch_staging.extract_resumable(batch, model_batch_size=spec.batch_size, run_dir=run_dir,
                                           extractor_version=spec.version, extract_chunk=extract_chunk)
    reloads = getattr(backend, "request_load_s", 0.0)  # the service (re)loaded a model mid-task
    seconds["model_load_s"], seconds["extract_s"] = (seconds["model_load_s"] + reloads,
                                                     seconds["extract_s"] - reloads)
    results, ti, key = done.results, ctx["ti"], batch_staging.batch_key(batch)
    staged = write_staged(results, run_dir / f"batch-{ti.map_index:05d}-{key}.jsonl")
    if staged["ok"] + staged["failed"] != len(batch) or \
            [r.receipt_id for r in results] != [b["receipt_id"] for b in batch]:
        raise RuntimeError(f"staged {staged} for a batch of {len(batch)}: a receipt went missing")
    return {**staged, "receipts": len(batch), "map_index": ti.map_index, "batch_key": key,
            "extracted": done.extracted, "resumed": done.resumed,
            **{k: round(v, 4) for k, v in seconds.items()},
            "task_s": round(time.perf_counter() - t_start, 4)}


def _extraction_backend(spec, model_dir: str | None, cfg: config.PipelineConfig):
    """The model for this task and the seconds spent loading it: loaded here (once per
    process; the embedded default), or the GPU worker's resident extraction service when
    ``RECEIPT_EXTRACTION_SERVICE_URL`` is set (only a load the task waited for counts)."""
    if not cfg.extraction_service_url:
        from extractor.backends import load_backend

        t0 = time.perf_counter()
        return load_backend(spec, model_dir), time.perf_counter() - t0
    from extractor.serving.client import ServiceBackend, ServiceModelMismatchError

    try:
        backend = ServiceBackend.connect(cfg.extraction_service_url, spec, model_dir,
                                         timeout_s=cfg.extraction_service_timeout_s)
    except ServiceModelMismatchError as exc:  # retrying cannot change the service's model
        raise _fail(str(exc)) from exc
    return backend, backend.startup_load_s


def _read_chunk(items: Sequence[dict[str, Any]], version: str, client: Any, root: str | None = None):
    """Bytes of each item as a ReceiptInput, or (same position) a failed result when the
    object cannot be handed to the backend (too large, vanished, changed, moved out of
    the source root)."""
    from extractor.images import MAX_FILE_BYTES, ReceiptInput, file_id_of, page_source, receipt_id_of
    from extractor.schema import ExtractionResult

    results: list[ExtractionResult | None] = []
    inputs: list[ReceiptInput | None] = []
    for item in items:
        source = page_source(item["uri"], item.get("page"))
        if item["size"] > MAX_FILE_BYTES:  # never pull a huge object into worker memory
            reason = f"bad image: file too large: {item['size']} bytes > {MAX_FILE_BYTES}"
        else:
            data, reason = _read_item(item, client, root)
            if data is not None and receipt_id_of(data) == file_id_of(item["receipt_id"]):
                results.append(None)
                inputs.append(ReceiptInput(receipt_id=item["receipt_id"], source=source, data=data,
                                           page=item.get("page")))
                continue
            reason = reason or "object changed after discovery (its bytes no longer match its id)"
        results.append(ExtractionResult.failed(receipt_id=item["receipt_id"], source=source,
                                               reason=reason, extractor_version=version))
        inputs.append(None)
    return results, inputs


def _read_item(item: dict[str, Any], client: Any, root: str | None) -> tuple[bytes | None, str | None]:
    """(bytes, None), or (None, the reason) for a per-receipt problem reading them."""
    from extractor.pipeline.sources.local_files import OUTSIDE_ROOT, OutsideRootError

    try:
        return discovery.read_bytes(item["uri"], client, raw_uri=item.get("raw_uri"), root=root), None
    except FileNotFoundError:
        return None, "vanished: deleted or moved after discovery"
    except OutsideRootError:
        return None, f"refused: {OUTSIDE_ROOT} (replaced after discovery)"
    except OSError as exc:
        if item["uri"].startswith("s3://"):
            raise  # S3 trouble is the run's (the task retries), not this receipt's
        return None, f"unreadable: {type(exc).__name__} (errno {exc.errno})"


def validate_and_load(staged: Iterable[dict[str, Any]] | None, extractor: dict[str, Any],
                      discovered: dict[str, Any], batches: Sequence[Sequence[dict[str, Any]]] | None,
                      notifiers: Sequence[Notifier] = ()) -> dict[str, Any]:
    """Validate, judge against the trailing runs (trend), load receipts + quarantine + run
    lineage in ONE transaction, alert on "alert"/"fail", fail the run on "fail" (after recording)."""
    from extractor.pipeline.quality import summary as summaries
    from extractor.pipeline.quality import trends
    from extractor.pipeline.quality.expectations import Thresholds
    from extractor.pipeline.quality.validation import validate_results
    from extractor.pipeline.sources.staging import read_staged
    from extractor.pipeline.warehouse.base import utc_naive

    ctx, spec, cfg = _context(), _spec(extractor), load_config()
    staged = _current_staged(staged, batches)
    results = [r for s in staged for r in read_staged(s["uri"])]
    start, end = ctx["data_interval_start"], ctx["data_interval_end"]
    # "not in the future" is judged against the partition's last day (plus the suite's grace)
    partition_day = discovery.partition_days(start, end)[-1]
    t0 = time.perf_counter()
    outcome = validate_results(
        results, thresholds=Thresholds.from_dict(cfg.thresholds), logical_date=partition_day,
        run_id=ctx["run_id"], data_docs_dir=str(cfg.data_docs_dir) if cfg.data_docs_dir else None)
    validate_s = time.perf_counter() - t0
    from extractor.pipeline.quality.confidence import flag_low_confidence

    outcome.valid = flag_low_confidence(  # loaded, but flagged for receipts_review
        outcome.valid, min_confidence=cfg.review_min_confidence,
        required_fields=Thresholds.from_dict(cfg.thresholds).required_fields)
    # Before anything is written: the staged results must cover exactly what was discovered.
    ids = [item["receipt_id"] for batch in (batches or []) for item in batch]
    try:
        summaries.reconcile(ids, outcome.valid, outcome.quarantined)
    except summaries.ReconciliationError as exc:
        raise _fail(f"staged results do not match discovery: {exc}") from exc
    summary = summaries.summarize_run(results, outcome, discovered=len(ids),
                                      timings=summaries.stage_timings(staged, validate_s))
    _attach_discovery(summary, discovered)
    summary["needs_review"] = sum(r.review_reason is not None for r in outcome.valid)
    warehouse = open_warehouse(cfg)
    try:
        trend = trends.judge(warehouse.fetch, summary, run_id=ctx["run_id"], extractor_version=spec.version,
                             partition_start=utc_naive(start),
                             tolerances=trends.TrendTolerances.from_dict(cfg.trend_tolerances))
        decision, reason = trends.escalate(outcome.decision, outcome.stats.get("decision_reason"), trend)
        summary.update(decision=decision, decision_reason=reason, trend=trend.to_dict())
        run = _run_record(ctx, spec, extractor, summary)
        t1 = time.perf_counter()
        summary["load"] = warehouse.load(outcome.valid, outcome.quarantined, run)
        summary["timings"]["load_s"] = round(time.perf_counter() - t1, 4)
        log.info("%s", summaries.format_summary(summary))
        if decision in ALERT_LEVEL:
            _quality_alert(warehouse, cfg, ctx, outcome, summary, spec.version, str(partition_day),
                           notifiers)
        _publish_snapshot(warehouse, cfg)
    finally:
        warehouse.close()
    if decision == "fail":
        raise _fail(f"validation decision 'fail' ({reason}); "
                    f"rows and quarantine were recorded, see the alerts table")
    return summary


def _run_record(ctx: dict[str, Any], spec, extractor: dict[str, Any], summary: dict[str, Any]):
    from extractor.pipeline.records import RunRecord

    dag_run = ctx["dag_run"]
    return RunRecord(
        run_id=ctx["run_id"], dag_id=ctx["dag"].dag_id, logical_date=ctx.get("logical_date"),
        partition_start=ctx["data_interval_start"], partition_end=ctx["data_interval_end"],
        extractor_version=spec.version, model_id=spec.model_id, revision=spec.revision,
        prompt_version=spec.prompt_version,
        started_at=_run_started_at(extractor, dag_run), finished_at=_utc_now(),
        counts=summary["counts"], timings=summary["timings"], decision=summary["decision"],
        summary=summary, extractor_origin=extractor.get("origin"))


def _quality_alert(warehouse, cfg: config.PipelineConfig, ctx: dict[str, Any], outcome,
                   summary: dict[str, Any], version: str, partition: str,
                   notifiers: Sequence[Notifier]) -> None:
    from extractor.pipeline.quality.alert_text import quality_alert
    from extractor.pipeline.quality.alerts import send_alert
    from extractor.pipeline.quality.expectations import Thresholds

    message, details = quality_alert(
        _run_link(ctx), decision=summary["decision"], reason=summary["decision_reason"],
        summary=summary, stats=outcome.stats, thresholds=Thresholds.from_dict(cfg.thresholds).to_dict(),
        trend=summary.get("trend"), extractor_version=version, partition=partition,
        data_docs=outcome.data_docs_path)
    send_alert(warehouse, run_id=ctx["run_id"], level=ALERT_LEVEL[summary["decision"]], message=message,
               details=details, notifiers=[*notifiers, *alert_callbacks(cfg)], secrets=_SECRETS,
               redactor=_airflow_redactor())


def _attach_discovery(summary: dict[str, Any], discovered: dict[str, Any] | None) -> None:
    """Discovery's counts go with the run; entries it skipped (links out of the root,
    markers, vanished files) are counted in the run's counts beside the receipts."""
    summary["discovery"] = discovered
    summary["counts"]["skipped"] = int((discovered or {}).get("skipped", 0))


def _run_started_at(extractor: dict[str, Any], dag_run: Any) -> dt.datetime:
    """When the run began, by the wall clock: ``resolve_extractor``'s stamp (the run's
    first task; the same for every re-run of a later task, so a re-load writes identical
    rows). Not ``dag_run.start_date``: ``dag.test`` / ``airflow dags test`` set that to
    the logical date, which made a test run "start" after it finished."""
    stamp = extractor.get("run_started_at")
    if stamp:
        return dt.datetime.fromisoformat(stamp)
    return getattr(dag_run, "start_date", None) or _utc_now()  # an extractor XCom from before


def _publish_snapshot(warehouse, cfg: config.PipelineConfig) -> None:
    """Refresh the readers' copy of a DuckDB warehouse (a failure is logged, not raised:
    the load is committed, and the next run publishes again)."""
    try:
        path = warehouse.publish_snapshot(cfg.warehouse_snapshot)
    except OSError as exc:
        log.error("warehouse snapshot for readers not refreshed: %s", exc)
        return
    if path is not None:
        log.info("warehouse snapshot for readers: %s", path)


def _current_staged(staged: Sequence[dict[str, Any]] | None,
                    batches: Sequence[Sequence[dict[str, Any]]] | None) -> list[dict[str, Any]]:
    """The staged results of the run's current batches. ``staged`` is a lazy XCom sequence
    (one entry per mapped extract, empty when extract was skipped) that also holds the
    results of task instances an earlier try of this run mapped and the current mapping
    removed (a cleared or reprocessed run): those are dropped, never loaded."""
    from extractor.pipeline.sources.batch_staging import StagingMismatch, select_current

    entries = [staged[i] for i in range(len(staged))] if staged else []
    try:
        current, _stale = select_current(entries, batches or [])
    except StagingMismatch as exc:
        raise _fail(f"staged results do not match discovery: {exc}") from exc
    return current


def reconcile(batches: Sequence[Sequence[dict[str, Any]]] | None, extractor: dict[str, Any]) -> dict[str, Any]:
    """Every discovered receipt is in exactly one of receipts / quarantine for this version."""
    spec, cfg = _spec(extractor), load_config()
    ids = sorted({item["receipt_id"] for batch in (batches or []) for item in batch})
    warehouse = open_warehouse(cfg)
    try:
        loaded = _ids_in(warehouse, "receipts", spec.version, ids)
        quarantined = _ids_in(warehouse, "quarantine", spec.version, ids)
    finally:
        warehouse.close()
    missing = set(ids) - loaded - quarantined
    both = loaded & quarantined
    result = {"extractor_version": spec.version, "discovered": len(ids), "loaded": len(loaded),
              "quarantined": len(quarantined), "missing": len(missing), "in_both": len(both)}
    if missing or both:
        raise _fail(f"reconcile failed for {spec.version}: {result}; missing {sorted(missing)[:10]}, "
                    f"in both tables {sorted(both)[:10]}")
    log.info("reconciled: %s", result)
    return result


def _ids_in(warehouse, table: str, version: str, ids: list[str], chunk: int = 500) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        marks = ", ".join("?" * len(part))
        rows = warehouse.fetch(f"SELECT receipt_id FROM {table} WHERE extractor_version = ? "
                               f"AND receipt_id IN ({marks})", (version, *part))
        found.update(r[0] for r in rows)
    return found


def report(summary: dict[str, Any], reconciliation: dict[str, Any]) -> dict[str, Any]:
    """Log the run summary (already stored in ``runs`` by the load) and hand it downstream."""
    ctx = _context()
    counts = summary["counts"]
    log.info("receipts_daily %s: %s new, %s loaded, %s quarantined, decision %s, throughput %s; "
             "reconciled %s", ctx["run_id"], counts.get("discovered"), counts.get("valid"),
             counts.get("quarantined"), summary.get("decision"), summary.get("throughput"),
             reconciliation)
    out = {"run_id": ctx["run_id"], "counts": counts, "decision": summary.get("decision"),
           "extractor_version": reconciliation.get("extractor_version"),
           "reconciliation": reconciliation, **quality_pages(load_config(), ctx["run_id"])}
    from airflow.sdk import Asset

    # downstream DAGs scheduled on the Asset learn which extractor version this run wrote
    ctx["outlet_events"][Asset(config.RECEIPTS_ASSET_URI)].extra = out
    return out


def quality_pages(cfg: config.PipelineConfig, run_id: str) -> dict[str, str | None]:
    """Where the run's Data Docs page and the quality report are (files on shared storage;
    the ``receipts_quality_docs`` plugin serves them in the Airflow UI)."""
    if cfg.data_docs_dir is None:
        return {"data_docs": None, "quality_report": None}
    from extractor.pipeline.quality.datadocs import REPORT_SUBDIR, RUNS_SUBDIR, run_page_name

    return {"data_docs": str(cfg.data_docs_dir / RUNS_SUBDIR / run_page_name(run_id)),
            "quality_report": str(cfg.data_docs_dir / REPORT_SUBDIR / "index.html")}


def refresh_quality_report() -> dict[str, Any]:
    """Redraw the quality report beside the Data Docs (``<data docs>/report/``): the
    configured window of days ending at the newest partition in the warehouse, so a
    backfill of an old day never replaces the report with an older window."""
    from extractor.pipeline.quality.datadocs import REPORT_SUBDIR, write_index
    from extractor.pipeline.quality.history import latest_day
    from extractor.pipeline.quality.report import write_report

    cfg = load_config()
    if cfg.data_docs_dir is None:
        log.info("Data Docs are off (receipts_data_docs_dir=none): no quality report")
        return {"page": None}
    warehouse = open_warehouse(cfg)
    try:
        result = write_report(warehouse, cfg.data_docs_dir / REPORT_SUBDIR,
                              days=cfg.quality_report_days, end=latest_day(warehouse),
                              data_docs_link="../index.html")
    finally:
        warehouse.close()
    write_index(cfg.data_docs_dir)  # the index links the report once it exists
    log.info("quality report %s .. %s (%d runs, versions %s): %s", result["start"], result["end"],
             result["runs"], ", ".join(result["versions"]) or "none", result["page"])
    return result


def prune_staging() -> dict[str, Any]:
    """Delete this DAG's staging run folders older than the retention (the current run's
    folder always stays). Runs after ``report``, so only a run that finished prunes."""
    from extractor.pipeline.sources.staging import prune_staging as prune

    ctx, cfg = _context(), load_config()
    dag_dir = cfg.staging_dir / _safe(ctx["dag"].dag_id)
    result = prune(dag_dir, older_than_days=cfg.staging_retention_days, keep={_safe(ctx["run_id"])})
    log.info("staging %s (retention %s days): removed %d run folders, kept %d, errors %s",
             dag_dir, cfg.staging_retention_days or "off", len(result["removed"]), result["kept"],
             result["errors"] or "none")
    return {"staging_dir": str(dag_dir), "retention_days": cfg.staging_retention_days,
            "removed": len(result["removed"]), "kept": result["kept"], "errors": result["errors"]}


# ----------------------------------------------------------------------------- alerts

def alert_callbacks(cfg: config.PipelineConfig) -> list[Notifier]:
    """Extra notifiers named by dotted path (``pkg.module:function``) in the config."""
    out = []
    for path in cfg.alert_callbacks:
        module, _, attr = path.partition(":")
        out.append(getattr(importlib.import_module(module), attr))
    return out


def _ui_base_url() -> str:
    """Airflow's ``[api] base_url``: the UI links in alerts (task logs use the same)."""
    from airflow.sdk.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080/")


def _run_link(context: dict[str, Any]):
    from extractor.pipeline.quality.alert_text import RunLink

    dag_run = context.get("dag_run")
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id") or "unknown"
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or "receipts_daily"
    return RunLink(dag_id=dag_id, run_id=run_id, ui_base_url=_ui_base_url())


def _airflow_redactor() -> Callable[[Any], Any]:
    """Airflow's secrets masker as a function (what it knows: connection passwords, sensitive
    Variables, everything passed to ``mask_secret``)."""
    from airflow.sdk.log import redact

    return redact


def _failed_task(ti: Any, exception: BaseException | str | None):
    from extractor.pipeline.quality.alert_text import FailedTask

    max_tries = getattr(ti, "max_tries", None)
    return FailedTask.from_exception(
        task_id=ti.task_id, map_index=getattr(ti, "map_index", -1), try_number=getattr(ti, "try_number", 0),
        max_tries=None if max_tries is None else max_tries + 1, exception=exception,
        log_url=getattr(ti, "log_url", None))


def _deliver(run_id: str, level: str, message: str, details: dict[str, Any],
             notifiers: Sequence[Notifier], *, warehouse: Any = None,
             notify_only_if_unrecorded: bool = False) -> None:
    """Send an alert from a callback: the configured channels, the alerts table when the
    warehouse opens (it may be why the run failed: then log + notifiers only).
    ``notify_only_if_unrecorded``: people hear of it only when no row can be written (a
    task failure: the run's failure alert lists it from its row)."""
    from extractor.pipeline.quality.alerts import send_alert
    from extractor.redaction import redact_text

    channels, opened = list(notifiers), None
    try:
        cfg = load_config()
        channels += alert_callbacks(cfg)
        if warehouse is None:
            warehouse = opened = open_warehouse(cfg)
    except Exception as exc:  # noqa: BLE001 - any reason (bad setting, driver error): still alert
        why = _airflow_redactor()(redact_text(f"{type(exc).__name__}: {exc}", _SECRETS))
        if warehouse is None:
            log.error("alert for %s is not recorded in the alerts table (%s); log and notifiers only",
                      run_id, why)
            details = {**details, "not_recorded": why}
        else:
            log.error("alert for %s: the configured extra notifiers are unavailable (%s)", run_id, why)
    if notify_only_if_unrecorded and warehouse is not None:
        channels = []
    try:
        send_alert(warehouse, run_id=run_id, level=level, message=message, details=details,
                   notifiers=channels, secrets=_SECRETS, redactor=_airflow_redactor())
    finally:
        if opened is not None:
            opened.close()


def on_task_failure(context: dict[str, Any], notifiers: Sequence[Notifier] = ()) -> None:
    """Task ``on_failure_callback`` (its last try failed; runs in the task's process, where
    the exception is known): an alert row naming the task, its error and its log. People
    are told by the run's failure alert, which lists it; directly only when the row cannot
    be written (the warehouse is down), so the error still reaches them."""
    from extractor.pipeline.quality.alert_text import task_failure_alert

    run = _run_link(context)
    failed = _failed_task(context["ti"], context.get("exception"))
    message, details = task_failure_alert(run, failed)
    _deliver(run.run_id, "error", message, details, notifiers, notify_only_if_unrecorded=True)


def on_run_failure(context: dict[str, Any], notifiers: Sequence[Notifier] = ()) -> None:
    """DAG-level failure callback: one alert for the run, listing each failed task with the
    error its own failure alert recorded (the DAG callback does not see exceptions)."""
    from extractor.pipeline.quality.alert_text import FailedTask, run_failure_alert
    from extractor.pipeline.quality.alerts import recorded_task_failures

    run, notes = _run_link(context), []
    failed: dict[tuple[str, int], FailedTask] = {}
    if context.get("ti") is not None:  # the task that failed last, as the scheduler saw it
        task = _failed_task(context["ti"], None)
        failed[(task.task_id, task.map_index)] = task
    try:
        warehouse = open_warehouse(load_config())
    except Exception as exc:  # noqa: BLE001 - reported in the alert itself, redacted
        warehouse = None
        notes.append("task errors not available: the warehouse does not open "
                      f"({type(exc).__name__}: {exc}); see each task's failure alert and log")
    try:
        if warehouse is not None:
            warehouse.release_claims(run.run_id)  # the day's next run may extract what this one held
            since = getattr(context.get("dag_run"), "start_date", None)
            for item in recorded_task_failures(warehouse.fetch, run.run_id, since=since):
                task = FailedTask(**item)
                failed[(task.task_id, task.map_index)] = task
        message, details = run_failure_alert(run, context.get("reason"), sorted(
            failed.values(), key=lambda t: (t.task_id, t.map_index)), notes)
        _deliver(run.run_id, "error", message, details, notifiers, warehouse=warehouse)
    finally:
        if warehouse is not None:
            warehouse.close()


def on_deadline_missed(context: dict[str, Any], notifiers: Sequence[Notifier] = ()) -> None:
    """``DeadlineAlert`` callback: ``context`` is what Airflow's deadline handling sends
    (``dag_run`` as the REST API renders it, ``deadline`` with its time)."""
    from extractor.pipeline.quality.alert_text import RunLink, deadline_alert

    dag_run, deadline = context.get("dag_run") or {}, context.get("deadline") or {}
    run = RunLink(dag_id=dag_run.get("dag_id", "receipts_daily"),
                  run_id=dag_run.get("dag_run_id") or dag_run.get("run_id") or "unknown",
                  ui_base_url=_ui_base_url())
    allowed = config.run_deadline()
    message, details = deadline_alert(
        run, deadline_time=deadline.get("deadline_time"),
        data_interval_end=dag_run.get("data_interval_end"), state=dag_run.get("state"),
        allowed=str(allowed) if allowed else None)
    _deliver(run.run_id, "error", message, details, notifiers)


def quality_gate(summary: dict[str, Any]) -> dict[str, Any]:
    """Make the run's verdict visible in the grid: ``pass`` ends in success, ``alert`` in
    *skipped* (a distinct colour; the run itself still succeeds, the load stands). A
    ``fail`` never gets here: validate_and_load failed the run after recording it."""
    decision, reason = summary.get("decision"), summary.get("decision_reason")
    if decision == "pass":
        log.info("quality gate: pass (%s)", reason)
        return {"decision": decision, "reason": reason}
    if decision == "alert":
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"quality decision 'alert': {reason} (rows are loaded; "
                                   f"see the alert for the numbers)")
    raise _fail(f"quality gate: unexpected decision {decision!r} ({reason})")
