"""Inputs the hf-backend tests share: a tiny model's spec, noise images and their JPEG bytes."""

from __future__ import annotations

import io

import numpy as np

from extractor.spec import ExtractorSpec, resolve_spec


def tiny_spec(kind: str, **overrides) -> ExtractorSpec:
    """The spec of a tiny test model (``kind``: mllama, llava); the backend's defaults unless
    ``overrides`` say otherwise (``grammar: none`` for free decoding)."""
    return resolve_spec({"backend": "hf", "model_id": f"tiny/{kind}", "revision": "test",
                         "max_new_tokens": 12, "batch_size": 4, **overrides})


def noise_image(seed: int, size: tuple[int, int]):
    """A seeded RGB noise image of ``size`` (width, height)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def noise_jpeg(seed: int, size: tuple[int, int] = (90, 140)) -> bytes:
    buf = io.BytesIO()
    noise_image(seed, size).save(buf, "JPEG")
    return buf.getvalue()


def engine_and_generate(model_dir, **overrides):
    """The tiny Mllama as two hf backends that differ only in the decoder: (static engine,
    ``model.generate``), for checks that both give the same output."""
    from extractor.backends.hf import HFBackend

    return tuple(HFBackend(tiny_spec("mllama", **{**overrides, "engine": engine}), model_dir=model_dir)
                 for engine in ("static", "generate"))
