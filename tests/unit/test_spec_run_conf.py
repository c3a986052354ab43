"""A run's conf picks among presets and revisions; which code runs and which repositories
are trusted is the admin configuration's (the Variable / environment) alone."""

from __future__ import annotations

import json

import pytest

from extractor.errors import ConfigError
from extractor.spec import resolve_run_override, resolve_spec


@pytest.mark.parametrize("conf,expected", [
    ({"preset": "ocr", "trust_remote_code": True}, "may not set trust_remote_code"),
    (json.dumps({"backend": "legacy-remote-code", "model_id": "evil/repo", "trust_remote_code": True}),
     "may not set trust_remote_code"),
    ("llamavision-1b-legacy", "runs its repository's own code"),
    ({"preset": "llamavision-1b-legacy", "revision": "abc"}, "runs its repository's own code"),
    ({"backend": "hf", "model_id": "someone/vlm"}, "not a preset's"),
    ({"preset": "llama-3.2-11b-vision-instruct", "model_id": "someone/vlm"}, "not a preset's"),
    ({"preset": "llama-3.2-11b-vision-instruct", "source": "s3://someone/weights"}, "other weights"),
])
def test_run_conf_that_chooses_code_or_repositories_is_refused(conf, expected):
    with pytest.raises(ConfigError, match=expected) as refused:
        resolve_run_override(conf)
    assert "\n" not in str(refused.value)  # one line, for the task log and the alert


def test_run_conf_may_pick_presets_revisions_and_admin_listed_repositories():
    pinned = resolve_run_override({"preset": "llama-3.2-11b-vision-instruct", "revision": "0" * 40,
                                   "batch_size": 4})
    assert pinned.revision == "0" * 40 and pinned.batch_size == 4
    assert resolve_run_override("ocr").backend == "ocr"
    listed = resolve_run_override({"backend": "hf", "model_id": "tiny/mllama"},
                                  allowed_model_ids=("tiny/mllama",))
    assert listed.model_id == "tiny/mllama" and not listed.trust_remote_code


def test_a_spec_inheriting_trust_remote_code_with_another_model_is_refused_everywhere():
    with pytest.raises(ConfigError, match="must set trust_remote_code itself"):
        resolve_spec({"preset": "llamavision-1b-legacy", "model_id": "someone/else"})
    # the admin saying so explicitly is an opt-in, and the preset itself is unchanged
    explicit = resolve_spec({"preset": "llamavision-1b-legacy", "model_id": "internal/other",
                             "trust_remote_code": True})
    assert explicit.trust_remote_code and explicit.model_id == "internal/other"
    assert resolve_spec({"preset": "llamavision-1b-legacy", "source": "/models/legacy"}).trust_remote_code
