"""One configuration: the JSON Variable ``receipts_config`` (pipeline) and ``receipts.yaml``
(CLI) hold the same keys; RECEIPT_<KEY> is the fallback; the old Variables still work for
one release, with a deprecation warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from extractor import settings
from extractor.errors import ConfigError
from extractor.pipeline import config
from extractor.spec import DEFAULT_PRESET, PRESETS, resolve_spec


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("RECEIPT_", "RECEIPTS_")) or name == "LLAMA_MODEL_PATH":
            monkeypatch.delenv(name)


def test_the_json_variable_drives_every_setting(tmp_path):
    variables = {"receipts_config": json.dumps({
        "model": {"preset": "ocr", "batch_size": 4}, "source": "s3://bucket/incoming",
        "model_cache": str(tmp_path / "models"), "staging_dir": str(tmp_path / "staging"),
        "staging_retention_days": 7, "data_docs_dir": "off", "thresholds": {"min_rows": 1},
        "alert_callbacks": ["a.b:c", "d.e:f"], "batches_per_task": 2, "warehouse_url": "duckdb:///:memory:"})}
    cfg = config.load_config(variables.get)
    assert (cfg.source, cfg.model_cache_dir, cfg.staging_dir) == (
        "s3://bucket/incoming", tmp_path / "models", tmp_path / "staging")
    assert (cfg.staging_retention_days, cfg.data_docs_dir, cfg.thresholds) == (7, None, {"min_rows": 1})
    assert (cfg.alert_callbacks, cfg.batches_per_task, cfg.warehouse_url) == (("a.b:c", "d.e:f"), 2,
                                                                              "duckdb:///:memory:")
    assert resolve_spec(config.extractor_setting(variables.get)).batch_size == 4


def test_environment_is_the_fallback_with_one_naming(monkeypatch, tmp_path):
    monkeypatch.setenv("RECEIPT_MODEL", "ocr")
    monkeypatch.setenv("RECEIPT_STAGING_DIR", str(tmp_path / "env-staging"))
    variables = {"receipts_config": json.dumps({"source": str(tmp_path / "in")})}
    cfg = config.load_config(variables.get)
    assert cfg.staging_dir == tmp_path / "env-staging" and cfg.source == str(tmp_path / "in")
    assert config.extractor_setting(variables.get) == "ocr"
    monkeypatch.setenv("RECEIPT_SOURCE", "/ignored")  # the Variable's key wins over the environment
    assert config.load_config(variables.get).source == str(tmp_path / "in")


def test_old_variables_are_read_with_a_deprecation_warning(caplog, tmp_path):
    old = {"receipt_extractor": "ocr", "receipts_staging_dir": str(tmp_path / "old")}
    with caplog.at_level(logging.WARNING, logger="extractor.settings"):
        cfg = config.load_config(old.get)
        assert config.extractor_setting(old.get) == "ocr"
    assert cfg.staging_dir == tmp_path / "old"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'receipts_staging_dir' is deprecated: set 'staging_dir' in the JSON Variable" in warned
    assert "'receipt_extractor' is deprecated: set 'model'" in warned
    new = {**old, "receipts_config": json.dumps({"staging_dir": str(tmp_path / "new")})}
    assert config.load_config(new.get).staging_dir == tmp_path / "new"  # the new key wins


def test_a_broken_json_variable_is_a_config_error():
    with pytest.raises(ConfigError, match="Variable 'receipts_config' is not valid JSON"):
        config.load_config({"receipts_config": "{model: ocr"}.get)
    with pytest.raises(ConfigError, match="must be a mapping"):
        config.load_config({"receipts_config": "[1]"}.get)


def test_model_path_loads_the_chosen_model_from_a_folder(tmp_path):
    spec = resolve_spec({"model_path": str(tmp_path), "quantization": "4bit", "batch_size": 8})
    default = resolve_spec(DEFAULT_PRESET)
    assert (spec.model_id, spec.source, spec.quantization, spec.batch_size) == (
        default.model_id, str(tmp_path), "4bit", 8)
    legacy = resolve_spec({"preset": "llamavision-1b-legacy", "model_path": str(tmp_path)})
    assert legacy.backend == "legacy-remote-code" and legacy.source == str(tmp_path)


def test_yaml_file_found_by_flag_then_environment_then_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert settings.config_file() is None
    (tmp_path / "receipts.yaml").write_text("model: ocr\n")
    assert settings.config_file() == tmp_path / "receipts.yaml"
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  model_path: /models/llama\n  quantization: 8bit\n")
    monkeypatch.setenv("RECEIPTS_CONFIG", str(other))
    assert settings.config_file() == other
    assert settings.config_file(tmp_path / "receipts.yaml") == tmp_path / "receipts.yaml"
    model = settings.from_file(other).get("model")
    assert model == {"model_path": "/models/llama", "quantization": "8bit"}
    monkeypatch.setenv("RECEIPTS_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="gone.yaml \\(RECEIPTS_CONFIG\\) does not exist"):
        settings.config_file()


def test_yaml_errors_are_config_errors(tmp_path):
    bad = tmp_path / "receipts.yaml"
    bad.write_text("model: [ocr\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        settings.from_file(bad)
    bad.write_text("- ocr\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        settings.from_file(bad)


def test_deploy_files_hold_one_variable_with_a_pinned_model():
    repo = Path(__file__).resolve().parents[2]
    variables = json.loads((repo / "deploy" / "variables.json").read_text())
    assert list(variables) == ["receipts_config"]
    value = variables["receipts_config"]
    assert set(value) <= set(settings.KEYS)
    spec = resolve_spec(value["model"])
    assert len(spec.revision) == 40 and spec.revision == PRESETS[DEFAULT_PRESET]["revision"]


def test_every_pipeline_setting_is_a_key_of_the_file_and_the_variable():
    """A setting read in pipeline/config.py (``_setting(get, "receipts_x", "RECEIPT_X", ...)``)
    must be listed in ``settings.KEYS``, or receipts.yaml would refuse it as a typo."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(config))
    read = {settings.key_of(node.args[1].value) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_setting"
            and isinstance(node.args[1], ast.Constant)}
    assert read and read <= set(settings.KEYS), read - set(settings.KEYS)
    assert all(settings.env_name(key) == "RECEIPT_" + key.upper() for key in read)
