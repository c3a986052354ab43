"""One configuration, two carriers: ``receipts.yaml`` for the CLI, one JSON Variable in Airflow.

Both hold the same keys (``KEYS``); the ``model:`` key takes what a preset or spec takes
(``extractor.spec.resolve_spec``), plus ``model_path`` for a local folder::

    model:
      preset: llama-3.2-11b-vision-instruct   # or model_path: /models/llama-3.2-11b-vision
      quantization: 4bit
      batch_size: 16
    model_cache: /efs/models
    thresholds: {max_quarantine_rate_fail: 0.5}

Where a key is not set, ``RECEIPT_<KEY>`` in the environment is the fallback
(``RECEIPT_MODEL``, ``RECEIPT_SOURCE``, ``RECEIPT_MODEL_CACHE`` ...). The CLI finds its file
through ``--config``, then ``$RECEIPTS_CONFIG``, then ``./receipts.yaml``; the pipeline reads
the Variable ``receipts_config``. The Variables of the previous release (``receipt_extractor``,
``receipts_source`` ...) are still read, with a deprecation warning, where the JSON Variable
lacks the key. ``LLAMA_MODEL_PATH`` (the migration guide's rollback switch) is applied by
the model store: see ``extractor.model_store.ensure_model``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from extractor.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_VARIABLE = "receipts_config"
CONFIG_FILE_ENV = "RECEIPTS_CONFIG"
CONFIG_FILE_NAME = "receipts.yaml"
ENV_PREFIX = "RECEIPT_"
# The keys of the file and of the Variable (others add keys by reading them through
# ``pipeline.config._setting``; a key not listed here is refused in the file, as a typo).
KEYS = ("model", "source", "s3_conn_id", "warehouse_url", "model_cache", "staging_dir",
        "staging_retention_days", "data_docs_dir", "thresholds", "alert_callbacks",
        "batches_per_task",
        "claim_ttl_hours", "warehouse_lock_timeout_s", "warehouse_snapshot",  # re-runs, concurrency
        "quality_report_days", "allowed_models",
        "review_min_confidence", "review_max_per_run",  # the review loop
        "trend_tolerances")
# Variables of the previous release, read (with a warning) until 0.3; the environment
# names were already RECEIPT_<KEY>, except the model's.
LEGACY_VARIABLES = {
    "model": "receipt_extractor", "source": "receipts_source", "s3_conn_id": "receipts_s3_conn_id",
    "warehouse_url": "receipts_warehouse_url", "model_cache": "receipts_model_cache",
    "staging_dir": "receipts_staging_dir", "staging_retention_days": "receipts_staging_retention_days",
    "data_docs_dir": "receipts_data_docs_dir", "thresholds": "receipts_thresholds",
    "alert_callbacks": "receipts_alert_callbacks", "batches_per_task": "receipts_batches_per_task"}
LEGACY_ENV = {"model": "RECEIPT_EXTRACTOR"}

VariableGetter = Callable[[str], Any]  # returns None when the Variable is not set


def key_of(name: str) -> str:
    """The configuration key of an old Variable name (``receipts_source`` -> ``source``)."""
    for prefix in ("receipts_", "receipt_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return "model" if name == "extractor" else name


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class Settings:
    """Values of one configuration (the JSON Variable or the YAML file), with the old
    Variables and then the environment as fallbacks. ``get(key)`` is None when unset."""

    def __init__(self, values: Mapping[str, Any] | None = None,
                 legacy_variable: VariableGetter | None = None, origin: str = "configuration"):
        self.values = dict(values or {})
        self.legacy_variable = legacy_variable
        self.origin = origin

    def get(self, key: str, default: Any = None, *, legacy_variable: str | None = None,
            env: str | None = None) -> Any:
        """The key's value; else the old Variable (``legacy_variable``, default: the known
        old name); else ``env`` (default ``RECEIPT_<KEY>``); else ``default``."""
        value = self.values.get(key)
        old_name = legacy_variable or LEGACY_VARIABLES.get(key)
        if _blank(value) and self.legacy_variable is not None and old_name:
            value = self.legacy_variable(old_name)
            if not _blank(value):
                log.warning("Variable %r is deprecated: set %r in the JSON Variable %r instead "
                            "(the old Variables are read until release 0.3)",
                            old_name, key, CONFIG_VARIABLE)
        for name in (env or env_name(key), LEGACY_ENV.get(key)):
            if _blank(value) and name:
                value = os.environ.get(name)
        if _blank(value):
            return default
        return value.strip() if isinstance(value, str) else value


def parse_mapping(value: Any, origin: str) -> dict[str, Any]:
    """The JSON Variable's value (text or already a dict) as a dict of known keys."""
    if _blank(value):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{origin} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{origin} must be a mapping of settings, got {type(value).__name__}")
    return dict(value)


def from_variables(get_variable: VariableGetter) -> Settings:
    """The pipeline's settings: the JSON Variable ``receipts_config``, old Variables after it."""
    values = parse_mapping(get_variable(CONFIG_VARIABLE), f"Variable {CONFIG_VARIABLE!r}")
    return Settings(values, legacy_variable=get_variable, origin=f"Variable {CONFIG_VARIABLE!r}")


def config_file(explicit: str | os.PathLike | None = None) -> Path | None:
    """``--config``, else ``$RECEIPTS_CONFIG``, else ``./receipts.yaml`` when it exists.
    A file named explicitly (flag or environment) must exist."""
    for named, how in ((explicit, "--config"), (os.environ.get(CONFIG_FILE_ENV), CONFIG_FILE_ENV)):
        if not _blank(named):
            path = Path(named).expanduser()
            if not path.is_file():
                raise ConfigError(f"configuration file {path} ({how}) does not exist")
            return path
    local = Path.cwd() / CONFIG_FILE_NAME
    return local if local.is_file() else None


def from_file(path: Path | None) -> Settings:
    """The CLI's settings from a YAML file (None: environment and defaults only)."""
    if path is None:
        return Settings(origin="environment")
    import yaml

    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{path} is not valid YAML: {problem}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of settings (model:, model_cache: ...)")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    return Settings(values, origin=str(path))
