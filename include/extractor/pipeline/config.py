"""Pipeline settings: where receipts come from, where results go, how strict to be.

Read inside tasks (never when a DAG file is parsed) from Airflow Variables with the
environment as fallback, so the same code serves the embedded default (nothing set:
local folders under ``./var``, DuckDB) and production (Variables and connections set
by the deployment). This module does not import Airflow: the caller passes a getter for
Variables (``tasks.py`` passes ``airflow.sdk.Variable.get``; tests pass a dict's ``get``).

| setting | Variable | env | default |
| --- | --- | --- | --- |
| extractor spec | ``receipt_extractor`` | ``RECEIPT_EXTRACTOR`` | production preset (Llama 3.2 11B Vision Instruct) |
| receipts source | ``receipts_source`` | ``RECEIPT_SOURCE`` | ``var/incoming`` |
| S3 connection id | ``receipts_s3_conn_id`` | ``RECEIPT_S3_CONN_ID`` | ``receipts_s3`` (then ``aws_default``) |
| warehouse | connection ``receipts_warehouse`` | ``RECEIPT_WAREHOUSE_URL`` | ``duckdb:///var/warehouse.duckdb`` |
| model cache | ``receipts_model_cache`` | ``RECEIPT_MODEL_CACHE`` | ``var/models`` |
| staging folder | ``receipts_staging_dir`` | ``RECEIPT_STAGING_DIR`` | ``var/staging`` |
| staging retention, days (0 = keep) | ``receipts_staging_retention_days`` | ``RECEIPT_STAGING_RETENTION_DAYS`` | 30 |
| Data Docs folder | ``receipts_data_docs_dir`` | ``RECEIPT_DATA_DOCS_DIR`` | ``var/data_docs`` |
| thresholds (JSON) | ``receipts_thresholds`` | ``RECEIPT_THRESHOLDS`` | validation defaults |
| extra alert callables | ``receipts_alert_callbacks`` | ``RECEIPT_ALERT_CALLBACKS`` | none |
| trend tolerances (JSON) | ``receipts_trend_tolerances`` | ``RECEIPT_TREND_TOLERANCES`` | ``quality.trends`` defaults |
| model batches per extract task | ``receipts_batches_per_task`` | ``RECEIPT_BATCHES_PER_TASK`` | 4 |
| GPU queue (parse time, env only) | | ``RECEIPT_GPU_QUEUE`` | ``default`` |
| extract task timeout, minutes (parse time, env only) | | ``RECEIPT_EXTRACT_TIMEOUT_MINUTES`` | 120 |
| run deadline, hours after the data interval ends (parse time, env only; 0 = off) | | ``RECEIPT_DEADLINE_HOURS`` | 0 (compose: 6) |

Relative paths are resolved against the working directory when the task runs; a
production deployment sets absolute paths on shared storage (the staging folder and the
model cache must be visible to every worker).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from extractor.errors import ConfigError

VariableGetter = Callable[[str], Any]  # returns None when the Variable is not set

EXTRACTOR_VARIABLE = "receipt_extractor"
EXTRACTOR_PARAM = "extractor"
WAREHOUSE_CONN_ID = "receipts_warehouse"
HF_CONN_ID = "huggingface_default"
DEFAULT_S3_CONN_IDS = ("receipts_s3", "aws_default")
DEFAULT_WAREHOUSE_URL = "duckdb:///var/warehouse.duckdb"
GPU_POOL = "gpu"
RECEIPTS_ASSET_URI = "receipts_warehouse://receipts"  # updated by every successful run


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
    trend_tolerances: dict[str, Any] = field(default_factory=dict)  # see quality.trends

    @property
    def source_is_s3(self) -> bool:
        return self.source.startswith("s3://")


def _setting(get_variable: VariableGetter, variable: str, env: str, default: Any) -> Any:
    value = get_variable(variable)
    if value is None or (isinstance(value, str) and not value.strip()):
        value = os.environ.get(env)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return value.strip() if isinstance(value, str) else value


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
    """The raw value of the extractor Variable (or env), None when neither is set."""
    return _setting(get_variable, EXTRACTOR_VARIABLE, "RECEIPT_EXTRACTOR", None)


def load_config(get_variable: VariableGetter, *, warehouse_conn_exists: bool = False) -> PipelineConfig:
    """Resolve every setting. ``warehouse_conn_exists``: whether the Airflow connection
    ``receipts_warehouse`` is defined (the caller checks; it wins over the env URL)."""
    source = str(_setting(get_variable, "receipts_source", "RECEIPT_SOURCE", "var/incoming"))
    if not source.startswith("s3://"):
        source = str(_path(source))
    data_docs = _setting(get_variable, "receipts_data_docs_dir", "RECEIPT_DATA_DOCS_DIR", "var/data_docs")
    thresholds = _setting(get_variable, "receipts_thresholds", "RECEIPT_THRESHOLDS", {})
    callbacks = _setting(get_variable, "receipts_alert_callbacks", "RECEIPT_ALERT_CALLBACKS", "")
    batches_per_task = int(_setting(get_variable, "receipts_batches_per_task",
                                    "RECEIPT_BATCHES_PER_TASK", 4))
    if batches_per_task < 1:
        raise ConfigError("receipts_batches_per_task must be >= 1")
    retention = _setting(get_variable, "receipts_staging_retention_days", "RECEIPT_STAGING_RETENTION_DAYS", 30)
    try:
        retention = int(retention)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"receipts_staging_retention_days must be a whole number of days: {retention!r}") from exc
    if retention < 0:
        raise ConfigError("receipts_staging_retention_days must be >= 0 (0 keeps staged files forever)")
    trend = _setting(get_variable, "receipts_trend_tolerances", "RECEIPT_TREND_TOLERANCES", {})
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
        thresholds=_json_setting(thresholds, "receipts_thresholds") if thresholds else {},
        alert_callbacks=tuple(c.strip() for c in str(callbacks).split(",") if c.strip()),
        batches_per_task=batches_per_task,
        staging_retention_days=retention,
        trend_tolerances=_json_setting(trend, "receipts_trend_tolerances") if trend else {},
    )


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
