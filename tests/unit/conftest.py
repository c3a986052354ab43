"""Shared fixtures of the library tests: tiny real models built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _few_torch_threads():
    """The CI machine has 2 cores shared with other jobs; tiny models need no more."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is pinned in requirements.txt
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """{"mllama": Path, "llava": Path}: random-weight models saved like Hub snapshots."""
    from extractor.tiny_models import KINDS, build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: build_tiny_model(kind, root / kind, seed=0) for kind in KINDS}


@pytest.fixture(scope="session")
def tiny_mllama_dir(tiny_model_dirs):
    return tiny_model_dirs["mllama"]


@pytest.fixture(scope="session")
def tiny_llava_dir(tiny_model_dirs):
    return tiny_model_dirs["llava"]
