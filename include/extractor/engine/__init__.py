"""The project's own batched decode for Llama 3.2 Vision (static KV cache + CUDA graphs).

``MllamaStaticEngine(model).generate(...)`` is what the ``hf`` backend calls for Mllama
models in bf16; other architectures keep ``model.generate``. Importing this package
imports no torch: the heavy modules load when the engine is built.
"""

from __future__ import annotations

from extractor.engine.memory import pick_batch_size, row_bytes

__all__ = ["MllamaStaticEngine", "pick_batch_size", "row_bytes", "supports"]  # noqa: F822 - lazy, see __getattr__


def __getattr__(name):
    if name == "MllamaStaticEngine":
        from extractor.engine.mllama import MllamaStaticEngine

        return MllamaStaticEngine
    raise AttributeError(name)


def supports(model) -> bool:
    """True when ``model`` is an Mllama conditional-generation model with plain (not
    bitsandbytes-quantised) linear weights, all on one device (a ``device_map`` spread
    over several GPUs, as for the 90B, stays with ``generate``): the engine's preconditions."""
    if type(model).__name__ != "MllamaForConditionalGeneration":
        return False
    if getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None):
        return False
    device_map = getattr(model, "hf_device_map", None) or {}
    if len({str(d) for d in device_map.values()}) > 1:
        return False
    return len({p.device for p in model.parameters()}) == 1
