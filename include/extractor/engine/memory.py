"""How many receipts fit in one decode batch, from the bytes each row pins on the GPU.

A decode batch holds, per row, the self-attention keys/values for every text position it
may reach (prompt + new tokens) and the cross-attention keys/values of its image (fixed
size: images x tiles x patches), both for the whole batch's lifetime. Everything else
(weights, the prefill's activations, the allocator's slack) is a fixed reserve. The
numbers here are plain arithmetic so they can be checked on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class RowBytes:
    """Bytes one batch row holds on the device while it decodes."""

    self_kv: int
    cross_kv: int
    scratch: int

    @property
    def total(self) -> int:
        return self.self_kv + self.cross_kv + self.scratch


def row_bytes(*, num_self_layers: int, num_cross_layers: int, num_kv_heads: int, head_dim: int,
              max_len: int, cross_len: int, vocab_size: int, hidden_size: int,
              dtype_bytes: int = 2, cross_dtype_bytes: int | None = None,
              self_dtype_bytes: int | None = None) -> RowBytes:
    """Per-row device bytes of a static-cache decode at text length ``max_len``.

    ``cross_len`` is the number of vision tokens a row attends to (images x tiles x
    patches per tile, 6404 for one 4-tile image of Llama 3.2 Vision). ``scratch`` covers
    the step's float32 logits (twice: value and argmax work space) and a few hidden-size
    activations. ``cross_dtype_bytes`` / ``self_dtype_bytes``: the cross-attention (self-attention)
    keys/values' element size when it is not ``dtype_bytes`` (1 for float8; a float8 cache's
    float32 scales add 4 bytes per token and head to the self-attention's, none worth counting
    to the image's).
    """
    self_bytes = dtype_bytes if self_dtype_bytes is None else self_dtype_bytes + 4 / head_dim
    kv = int(2 * num_kv_heads * head_dim * self_bytes)  # keys + values for one position, one layer
    cross = 2 * num_kv_heads * head_dim * (dtype_bytes if cross_dtype_bytes is None else cross_dtype_bytes)
    return RowBytes(self_kv=num_self_layers * kv * max_len,
                    cross_kv=num_cross_layers * cross * cross_len,
                    scratch=2 * 4 * vocab_size + 16 * hidden_size * dtype_bytes)


def pick_batch_size(free_bytes: int, per_row_bytes: int, *, reserve_bytes: int = 4 * GIB,
                    max_batch: int = 64, multiple: int = 8) -> int:
    """The largest batch whose rows fit in ``free_bytes`` after ``reserve_bytes``.

    Rounded down to a ``multiple`` (matrix shapes the GPU libraries like, and fewer
    distinct CUDA graphs) when at least one multiple fits; never below 1 and never above
    ``max_batch``. ``free_bytes`` is what ``torch.cuda.mem_get_info()`` reports free plus
    what the caching allocator holds unused, after the weights are loaded.
    """
    if per_row_bytes <= 0:
        raise ValueError("per_row_bytes must be positive")
    fit = max(0, free_bytes - reserve_bytes) // per_row_bytes
    fit = min(int(fit), max_batch)
    if fit >= multiple:
        fit -= fit % multiple
    return max(1, fit)


def free_device_bytes(device) -> int:
    """Bytes available to new tensors on ``device``: free on the card + cached but unused."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached_unused)
