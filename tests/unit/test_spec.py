import json

import pytest

from extractor.errors import ConfigError
from extractor.spec import DEFAULT_PRESET, PRESETS, ExtractorSpec, resolve_spec


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves(name):
    spec = resolve_spec(name)
    assert spec.version.startswith(spec.backend + ":")


def test_required_presets_exist():
    models = {resolve_spec(n).model_id for n in PRESETS}
    assert {"meta-llama/Llama-3.2-11B-Vision-Instruct", "meta-llama/Llama-3.2-11B-Vision",
            "meta-llama/Llama-3.2-90B-Vision-Instruct", "rapidocr"} <= models
    assert any(resolve_spec(n).backend == "legacy-remote-code" for n in PRESETS)


def test_empty_value_means_default_preset():
    assert resolve_spec(None) == resolve_spec(DEFAULT_PRESET) == resolve_spec("  ")


def test_preset_with_overrides_and_params_win():
    spec = resolve_spec(json.dumps({"preset": "llama-3.2-11b-vision-instruct", "revision": "abc123",
                                    "batch_size": 4}), overrides={"batch_size": 2, "revision": None})
    assert (spec.revision, spec.batch_size) == ("abc123", 2)
    assert spec.version == "hf:meta-llama/Llama-3.2-11B-Vision-Instruct@abc123:v1+receipt-json"


def test_version_changes_with_what_changes_the_output():
    base = resolve_spec("llama-3.2-11b-vision-instruct")
    assert resolve_spec({"preset": "llama-3.2-11b-vision-instruct", "prompt_version": "v2"}).version != base.version
    assert resolve_spec({"preset": "llama-3.2-11b-vision-instruct", "quantization": "8bit"}).version != base.version
    # batch size is a speed setting: the same extractor version
    assert resolve_spec({"preset": "llama-3.2-11b-vision-instruct", "batch_size": 1}).version == base.version


def test_full_spec_round_trips():
    spec = ExtractorSpec(backend="hf", model_id="org/model", revision="r1")
    assert resolve_spec(spec.model_dump_json()) == spec
    assert resolve_spec(spec) == spec


@pytest.mark.parametrize("value, message", [
    ("no-such-preset", "unknown extractor preset"),
    ("{not json", "not valid JSON"),
    ({"backend": "hf"}, "invalid extractor spec"),
    ({"preset": "ocr", "batch_size": 0}, "invalid extractor spec"),
    ({"preset": "ocr", "colour": "red"}, "invalid extractor spec"),
    ({"backend": "legacy-remote-code", "model_id": "x"}, "trust_remote_code"),
    ({"backend": "hf", "model_id": "x", "trust_remote_code": True}, "trust_remote_code"),
])
def test_bad_specs_are_clear_errors(value, message):
    with pytest.raises(ConfigError, match=message):
        resolve_spec(value)


def test_garbled_card_digits_survive_for_validation_to_flag():
    from extractor.schema import Receipt

    assert Receipt(card_last4="**** **** 4321").card_last4 == "4321"
    assert Receipt(card_last4="12a4").card_last4 == "12a4"  # the suite's regex quarantines it
    assert Receipt(card_last4=" ").card_last4 is None


def test_fp8_is_an_opt_in_preset_of_the_static_engine():
    spec = resolve_spec("llama-3.2-11b-vision-instruct-fp8")
    assert (spec.quantization, spec.engine) == ("fp8", "static")
    assert "+fp8-weight-only-fp8-kv:" in spec.version
    assert spec.version != resolve_spec("llama-3.2-11b-vision-instruct").version
    with pytest.raises(ConfigError, match="fp8"):
        resolve_spec({"preset": "llama-3.2-11b-vision-instruct", "quantization": "fp8", "engine": "generate"})


def test_ocr_fast_is_an_opt_in_preset_with_its_own_version():
    from extractor.backends.ocr import reader_settings
    from extractor.ocr.engine import OcrSettings

    default, fast = resolve_spec("ocr"), resolve_spec("ocr-fast")
    assert (fast.backend, fast.model_id, fast.prompt_version) == (default.backend, default.model_id,
                                                                  default.prompt_version)
    assert fast.version != default.version and "+latin-head" in fast.revision  # rows name the reader
    settings, second_opinion = reader_settings(fast)
    assert (settings.rec_head, settings.rec_min_width, settings.limit_side_len, second_opinion) == (
        "latin", 160, 1280, None)
    # the default preset still runs the default settings with its second opinion
    assert reader_settings(default)[0] == OcrSettings() and reader_settings(default)[1] is not None


def test_the_cut_head_alone_is_a_revision_of_the_ocr_preset():
    from extractor.backends.ocr import reader_settings

    spec = resolve_spec({"preset": "ocr", "revision": "3.10.0+latin-head"})
    settings, second_opinion = reader_settings(spec)
    assert (settings.rec_head, settings.rec_min_width, second_opinion is not None) == ("latin", 320, True)
    assert "@3.10.0+latin-head:" in spec.version


def test_an_ocr_revision_without_a_reader_is_refused():
    from extractor.backends.ocr import reader_settings

    with pytest.raises(ConfigError, match="no OCR reader for revision '3.11.0'"):
        reader_settings(resolve_spec({"preset": "ocr", "revision": "3.11.0"}))
