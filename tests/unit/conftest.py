"""Shared fixtures of the library tests: tiny real models built once per session."""

from __future__ import annotations

import pytest


def _few_torch_threads() -> None:
    """The CI machine has 2 cores shared with other jobs; tiny models need no more than one.
    Called by the model fixtures rather than autouse, so tests without torch don't import it."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """{"mllama": Path, "llava": Path}: random-weight models saved like Hub snapshots."""
    from extractor.testing.tiny_models import KINDS, build_tiny_model

    _few_torch_threads()
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: build_tiny_model(kind, root / kind, seed=0) for kind in KINDS}


@pytest.fixture(scope="session")
def tiny_mllama_dir(tiny_model_dirs):
    return tiny_model_dirs["mllama"]


@pytest.fixture(scope="session")
def tiny_llava_dir(tiny_model_dirs):
    return tiny_model_dirs["llava"]
