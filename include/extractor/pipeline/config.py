"""Pipeline settings: where receipts come from, where results go, how strict to be.

Read inside tasks (never when a DAG file is parsed) from ONE JSON Airflow Variable,
``receipts_config``, whose keys are those of the CLI's ``receipts.yaml``
(``extractor.settings``); ``RECEIPT_<KEY>`` in the environment is the fallback, so the same
code serves the embedded default (nothing set: local folders under ``./var``, DuckDB) and
production (the Variable, environment and connections set by the deployment). This module
does not import Airflow: the caller passes a getter for Variables (``tasks.py`` passes
``airflow.sdk.Variable.get``; tests pass a dict's ``get``).

| key of ``receipts_config`` | env fallback | default |
| --- | --- | --- |
| ``model`` (preset, spec or ``{"model_path": ...}``) | ``RECEIPT_MODEL`` | Llama 3.2 11B Vision Instruct |
| ``source`` | ``RECEIPT_SOURCE`` | ``var/incoming`` |
| ``s3_conn_id`` | ``RECEIPT_S3_CONN_ID`` | ``receipts_s3`` (then ``aws_default``) |
| ``warehouse_url`` (the connection wins) | ``RECEIPT_WAREHOUSE_URL`` | ``var/warehouse.duckdb`` |
| ``model_cache`` | ``RECEIPT_MODEL_CACHE`` | ``var/models`` |
| ``staging_dir`` | ``RECEIPT_STAGING_DIR`` | ``var/staging`` |
| ``staging_retention_days`` (0 = keep) | ``RECEIPT_STAGING_RETENTION_DAYS`` | 30 |
| ``data_docs_dir`` | ``RECEIPT_DATA_DOCS_DIR`` | ``var/data_docs`` |
| ``quality_report_days`` (the quality report's window) | ``RECEIPT_QUALITY_REPORT_DAYS`` | 30 |
| ``thresholds`` (object) | ``RECEIPT_THRESHOLDS`` | validation defaults |
| ``alert_callbacks`` | ``RECEIPT_ALERT_CALLBACKS`` | none |
| ``batches_per_task`` | ``RECEIPT_BATCHES_PER_TASK`` | 4 |
| ``claim_ttl_hours`` (a run's claim on a receipt in flight) | ``RECEIPT_CLAIM_TTL_HOURS`` | 12 |
| ``warehouse_lock_timeout_s`` (DuckDB: wait for the file lock) | ``RECEIPT_WAREHOUSE_LOCK_TIMEOUT_S`` | 60 |
| ``warehouse_snapshot`` (DuckDB: readers' copy; a path or ``off``) | ``RECEIPT_WAREHOUSE_SNAPSHOT`` | ``auto``: ``<warehouse>.snapshot.duckdb`` |
| ``allowed_models`` (repos a run's conf may name, list) | ``RECEIPT_ALLOWED_MODELS`` | none |
| ``trend_tolerances`` (object, ``quality.trends``) | ``RECEIPT_TREND_TOLERANCES`` | ``quality.trends`` defaults |
| GPU queue (parse time, env only) | ``RECEIPT_GPU_QUEUE`` | ``default`` |
| extract task timeout, minutes (parse time, env only) | ``RECEIPT_EXTRACT_TIMEOUT_MINUTES`` | 120 |
| run deadline, hours after the data interval ends (parse time, env only; 0 = off) | ``RECEIPT_DEADLINE_HOURS`` | 0 (compose: 6) |
| ``review_min_confidence`` (0 = off; docs/review.md) | ``RECEIPT_REVIEW_MIN_CONFIDENCE`` | 0.5 |
| ``review_max_per_run`` (forms per ``receipts_review`` run) | ``RECEIPT_REVIEW_MAX_PER_RUN`` | 50 |
| review response timeout, hours (parse time, env only) | ``RECEIPT_REVIEW_TIMEOUT_HOURS`` | 20 |
| extraction service (env only, per GPU worker) | ``RECEIPT_EXTRACTION_SERVICE_URL`` | none: in-task |
| one request to it, seconds (env only) | ``RECEIPT_EXTRACTION_SERVICE_TIMEOUT_S`` | 600 |

The Variables of the previous release (``receipt_extractor``, ``receipts_source`` ...) are
read where ``receipts_config`` lacks the key, with a deprecation warning (until 0.3).
Relative paths are resolved against the working directory when the task runs; a
production deployment sets absolute paths on shared storage (the staging folder and the
model cache must be visible to every worker).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extractor.errors import ConfigError
from extractor.settings import Settings, from_variables, key_of

VariableGetter = Callable[[str], Any]  # returns None when the Variable is not set

EXTRACTOR_VARIABLE = "receipt_extractor"  # deprecated: now the "model" key of CONFIG_VARIABLE
EXTRACTOR_PARAM = "extractor"
WAREHOUSE_CONN_ID = "receipts_warehouse"
HF_CONN_ID = "huggingface_default"
DEFAULT_S3_CONN_IDS = ("receipts_s3", "aws_default")
DEFAULT_WAREHOUSE_URL = "duckdb:///var/warehouse.duckdb"
GPU_POOL = "gpu"
RECEIPTS_ASSET_URI = "receipts_warehouse://receipts"  # updated by every successful run


def review_response_timeout_hours() -> float:
    """How long a review form waits for an answer; after it the receipt stays in the queue
    for the next ``receipts_review`` run. Read at parse time, from the environment only."""
    value = os.environ.get("RECEIPT_REVIEW_TIMEOUT_HOURS") or "20"
    try:
        hours = float(value)
    except ValueError as exc:
        raise ConfigError(f"RECEIPT_REVIEW_TIMEOUT_HOURS must be a number of hours: {value!r}") from exc
    if hours <= 0:
        raise ConfigError("RECEIPT_REVIEW_TIMEOUT_HOURS must be > 0")
    return hours


def gpu_queue() -> str:
    """Celery queue of the extract tasks. Read at parse time (a queue cannot be templated),
    from the environment only, which is cheap. Unset means "default" so the embedded
    default runs everywhere; production sets RECEIPT_GPU_QUEUE=gpu."""
    return os.environ.get("RECEIPT_GPU_QUEUE") or "default"


def _parse_time_number(env: str, default: float) -> float:
    raw = os.environ.get(env, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError as exc:
        raise ConfigError(f"{env} must be a number, not {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{env} must be >= 0, not {raw!r}")
    return value


def extract_timeout() -> dt.timedelta:
    """``execution_timeout`` of an extract task (parse time, env only): a hung model is
    killed after this long, which frees its GPU pool slot; the retry starts afresh."""
    return dt.timedelta(minutes=_parse_time_number("RECEIPT_EXTRACT_TIMEOUT_MINUTES", 120))


def run_deadline() -> dt.timedelta | None:
    """How long after its data interval ends a scheduled run must have finished (parse
    time, env only); None when switched off (0, the embedded default: deadlines need a
    scheduler, and Airflow 3.3.2's ``dag.test`` crashes on a DAG that has one, apache/airflow#73428)."""
    hours = _parse_time_number("RECEIPT_DEADLINE_HOURS", 0)
    return dt.timedelta(hours=hours) if hours else None


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one task execution (resolved once per task, never at parse time)."""

    source: str
    s3_conn_id: str | None
    warehouse_url: str | None  # None: use the Airflow connection ``receipts_warehouse``
    model_cache_dir: Path
    staging_dir: Path
    data_docs_dir: Path | None
    thresholds: dict[str, Any] = field(default_factory=dict)
    alert_callbacks: tuple[str, ...] = ()
    batches_per_task: int = 4  # a mapped extract task gets batch_size * this many receipts
    staging_retention_days: int = 30  # run folders untouched this long are pruned; 0 keeps all
    claim_ttl_hours: float = 12.0  # a run's claim on a receipt in flight expires after this
    warehouse_lock_timeout_s: float = 60.0  # DuckDB: how long a task waits for the file lock
    warehouse_snapshot: str | None = "auto"  # DuckDB copy for readers after each load; None: off
    quality_report_days: int = 30  # days of partitions the quality report shows
    allowed_model_ids: tuple[str, ...] = ()  # repos a run's conf may name besides the presets
    review_min_confidence: float = 0.5  # a required field below this -> loaded, needs_review
    review_max_per_run: int = 50  # review forms one receipts_review run opens
    trend_tolerances: dict[str, Any] = field(default_factory=dict)  # see quality.trends
    extraction_service_url: str | None = None  # the GPU worker's resident service; None: in-process
    extraction_service_timeout_s: float = 600.0  # one request (a model batch, queueing and reloads included)

    @property
    def source_is_s3(self) -> bool:
        return self.source.startswith("s3://")


def _setting(get_variable: VariableGetter | Settings, variable: str, env: str, default: Any) -> Any:
    """The value of ``receipts_config[key]`` (key: the old Variable name without its
    ``receipts_`` prefix), else the old Variable ``variable`` (deprecated), else ``env``,
    else ``default``."""
    settings = get_variable if isinstance(get_variable, Settings) else from_variables(get_variable)
    return settings.get(key_of(variable), default, legacy_variable=variable, env=env)


def _json_setting(value: Any, name: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{name} must be a JSON object: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ConfigError(f"{name} must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _path(value: str | os.PathLike) -> Path:
    return Path(value).expanduser().absolute()


def extractor_setting(get_variable: VariableGetter) -> Any:
    """The raw ``model`` setting (JSON Variable, old Variable, RECEIPT_MODEL or the old
    RECEIPT_EXTRACTOR), None when none is set."""
    return _setting(get_variable, EXTRACTOR_VARIABLE, "RECEIPT_MODEL", None)


def load_config(get_variable: VariableGetter, *, warehouse_conn_exists: bool = False) -> PipelineConfig:
    """Resolve every setting. ``warehouse_conn_exists``: whether the Airflow connection
    ``receipts_warehouse`` is defined (the caller checks; it wins over the env URL)."""
    get_variable = from_variables(get_variable)  # the JSON Variable, read once
    source = str(_setting(get_variable, "receipts_source", "RECEIPT_SOURCE", "var/incoming"))
    if not source.startswith("s3://"):
        source = str(_path(source))
    data_docs = _setting(get_variable, "receipts_data_docs_dir", "RECEIPT_DATA_DOCS_DIR", "var/data_docs")
    thresholds = _setting(get_variable, "receipts_thresholds", "RECEIPT_THRESHOLDS", {})
    callbacks = _setting(get_variable, "receipts_alert_callbacks", "RECEIPT_ALERT_CALLBACKS", "")
    batches_per_task = int(_setting(get_variable, "receipts_batches_per_task",
                                    "RECEIPT_BATCHES_PER_TASK", 4))
    if batches_per_task < 1:
        raise ConfigError("batches_per_task must be >= 1")
    retention = _setting(get_variable, "receipts_staging_retention_days",
                         "RECEIPT_STAGING_RETENTION_DAYS", 30)
    try:
        retention = int(retention)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"staging_retention_days must be a whole number of days: {retention!r}") from exc
    if retention < 0:
        raise ConfigError("staging_retention_days must be >= 0 (0 keeps staged files forever)")
    concurrency = _concurrency_settings(get_variable)
    report_days = _setting(get_variable, "receipts_quality_report_days", "RECEIPT_QUALITY_REPORT_DAYS", 30)
    if not str(report_days).isdigit() or int(report_days) < 1:
        raise ConfigError(f"quality_report_days must be a whole number >= 1: {report_days!r}")
    review_min_confidence, review_max_per_run = _review_settings(get_variable)
    trend = get_variable.get("trend_tolerances", {}, env="RECEIPT_TREND_TOLERANCES")  # a new key
    warehouse_url = None
    if not warehouse_conn_exists:
        warehouse_url = str(_setting(get_variable, "receipts_warehouse_url", "RECEIPT_WAREHOUSE_URL",
                                     DEFAULT_WAREHOUSE_URL))
        warehouse_url = _absolute_duckdb_url(warehouse_url)
    return PipelineConfig(
        source=source,
        s3_conn_id=_setting(get_variable, "receipts_s3_conn_id", "RECEIPT_S3_CONN_ID", None),
        warehouse_url=warehouse_url,
        model_cache_dir=_path(_setting(get_variable, "receipts_model_cache", "RECEIPT_MODEL_CACHE",
                                       "var/models")),
        staging_dir=_path(_setting(get_variable, "receipts_staging_dir", "RECEIPT_STAGING_DIR",
                                   "var/staging")),
        data_docs_dir=None if str(data_docs).lower() in ("none", "off") else _path(data_docs),
        thresholds=_json_setting(thresholds, "thresholds") if thresholds else {},
        alert_callbacks=_names(callbacks),
        batches_per_task=batches_per_task,
        staging_retention_days=retention,
        **concurrency,
        quality_report_days=int(report_days),
        allowed_model_ids=_names(_setting(get_variable, "receipts_allowed_models",
                                          "RECEIPT_ALLOWED_MODELS", "")),
        review_min_confidence=review_min_confidence,
        review_max_per_run=review_max_per_run,
        trend_tolerances=_json_setting(trend, "trend_tolerances") if trend else {},
        extraction_service_url=os.environ.get("RECEIPT_EXTRACTION_SERVICE_URL", "").strip() or None,
        extraction_service_timeout_s=_positive_float(
            os.environ.get("RECEIPT_EXTRACTION_SERVICE_TIMEOUT_S") or 600,
            "RECEIPT_EXTRACTION_SERVICE_TIMEOUT_S"),
    )


def _positive_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number of seconds: {value!r}") from exc
    if number <= 0:
        raise ConfigError(f"{name} must be > 0")
    return number


def _concurrency_settings(get_variable: Settings) -> dict[str, Any]:
    """Claims of receipts in flight, the DuckDB lock wait and the readers' snapshot."""
    out = {"claim_ttl_hours": _setting(get_variable, "receipts_claim_ttl_hours",
                                       "RECEIPT_CLAIM_TTL_HOURS", 12.0),
           "warehouse_lock_timeout_s": _setting(get_variable, "receipts_warehouse_lock_timeout_s",
                                                "RECEIPT_WAREHOUSE_LOCK_TIMEOUT_S", 60.0)}
    for name, raw in out.items():
        try:
            out[name] = float(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name} must be a number: {raw!r}") from exc
        if out[name] <= 0:
            raise ConfigError(f"{name} must be > 0")
    snapshot = str(_setting(get_variable, "receipts_warehouse_snapshot", "RECEIPT_WAREHOUSE_SNAPSHOT",
                            "auto"))
    if snapshot.lower() in ("off", "none"):
        out["warehouse_snapshot"] = None
    else:  # "auto": <warehouse>.snapshot.duckdb beside the warehouse file
        out["warehouse_snapshot"] = "auto" if snapshot == "auto" else str(_path(snapshot))
    return out


def _names(value: Any) -> tuple[str, ...]:
    """A list (JSON Variable, YAML) or comma-separated text (environment) of names."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _review_settings(get_variable: VariableGetter | Settings) -> tuple[float, int]:
    threshold = _setting(get_variable, "receipts_review_min_confidence", "RECEIPT_REVIEW_MIN_CONFIDENCE", 0.5)
    per_run = _setting(get_variable, "receipts_review_max_per_run", "RECEIPT_REVIEW_MAX_PER_RUN", 50)
    try:
        threshold, per_run = float(threshold), int(per_run)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"review_min_confidence must be a number in [0, 1] and "
                          f"review_max_per_run a whole number: {exc}") from exc
    if not 0 <= threshold <= 1:
        raise ConfigError(f"review_min_confidence must be in [0, 1] (0 = off): {threshold}")
    if per_run < 1:
        raise ConfigError("review_max_per_run must be >= 1")
    return threshold, per_run


def _absolute_duckdb_url(url: str) -> str:
    """Pin a relative DuckDB path to the current directory so every task of a run (and the
    demo's final query) opens the same file."""
    prefix = "duckdb:///"
    if not url.startswith(prefix):
        return url
    path = url[len(prefix):]
    if path == ":memory:" or path.startswith("/"):
        return url
    return prefix + str(_path(path))
