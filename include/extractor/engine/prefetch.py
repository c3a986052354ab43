"""Prefilling the waiting rows while a batch decodes: a worker thread on a second CUDA stream.

A decode step reads ~28 GB and computes little (memory-bound); a prefill computes a lot
and reads little (compute-bound). Run one after the other, each leaves the other's half of
the card idle. With ``overlap_prefill`` on, while the running rows decode, a worker thread
runs HF's prefill forward for the rows at the head of the queue on its own stream, a chunk
of ``prefill_batch`` rows at a time, up to ``depth`` rows ahead; when slots free up, the
joining rows' keys/values are only copied into the decode cache (``SlotScheduler._admit``).

The queue's head is always what was prefetched: rows join from the head, in order, and a
chunk may join in parts. The prefill forward is the same call as without overlap, so the
tokens are the same. On the CPU (the tests) the same path runs inline, without a thread.
If a prefetch fails (out of memory, say), it is dropped and the rows are prefilled when
they join, as without overlap.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Prefilled:
    """One prefilled chunk: its rows (input row ids), trimmed inputs, HF cache and the
    float32 logits of each row's last prompt token."""

    rows: list[int]
    x: dict[str, Any]
    pos_ids: Any
    cache: Any
    logits: Any
    event: Any = None

    def part(self, start: int, n: int, torch) -> Prefilled:
        """Rows ``start .. start+n`` of the chunk (keys/values selected when copied)."""
        if start == 0 and n == len(self.rows):
            return self
        sel = torch.arange(start, start + n, device=self.logits.device)
        x = {k: (v.index_select(0, sel) if v is not None else None) for k, v in self.x.items()}
        return Prefilled(self.rows[start:start + n], x, self.pos_ids.index_select(0, sel),
                         _CacheRows(self.cache, sel), self.logits.index_select(0, sel))


class _CacheRows:
    """A view of some rows of an HF cache: ``layers[i].keys/values`` index-selected on use."""

    def __init__(self, cache, sel):
        self.layers = [_LayerRows(layer, sel) for layer in cache.layers]


class _LayerRows:
    def __init__(self, layer, sel):
        self._layer, self._sel = layer, sel

    @property
    def keys(self):
        return self._layer.keys.index_select(0, self._sel)

    @property
    def values(self):
        return self._layer.values.index_select(0, self._sel)


class Prefetcher:
    """Prefills queued rows ahead of time for one decode batch of ``engine``; ``fill`` keeps
    up to ``depth`` rows prefilled, ``take`` hands over the chunks of the rows that join."""

    def __init__(self, engine, inputs, depth: int):
        torch = engine._torch
        self.engine, self.inputs, self.depth, self.torch = engine, inputs, depth, torch
        self.chunks: deque[tuple[list[int], Future]] = deque()
        self.failed = False
        self.on_cuda = engine.device.type == "cuda"
        if self.on_cuda:
            self.stream = torch.cuda.Stream(device=engine.device)
            self.stream.wait_stream(torch.cuda.current_stream(engine.device))  # the inputs are ready
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefill")

    def prefetched(self) -> int:
        return sum(len(rows) for rows, _ in self.chunks)

    def fill(self, queue: deque) -> None:
        """Submit prefills for the rows after those already prefetched (queue order)."""
        if self.failed:
            return
        ahead = self.prefetched()
        want = min(self.depth, len(queue))
        waiting = list(queue)
        while ahead < want:
            rows = waiting[ahead:min(want, ahead + self.engine.prefill_batch)]
            self.chunks.append((rows, self._submit(rows)))
            ahead += len(rows)

    def _submit(self, rows: list[int]) -> Future:
        if self.on_cuda:
            return self.pool.submit(self._run, rows)
        done: Future = Future()
        done.set_result(self._run(rows))
        return done

    def _run(self, rows: list[int]) -> Prefilled | None:
        torch = self.torch
        try:
            with torch.inference_mode():
                if not self.on_cuda:
                    return self.engine._prefill_rows(self.inputs, rows)
                with torch.cuda.stream(self.stream):
                    done = self.engine._prefill_rows(self.inputs, rows)
                    done.event = torch.cuda.Event()
                    done.event.record(self.stream)
                    return done
        except Exception as exc:  # the rows are prefilled when they join instead
            log.warning("prefill ahead of %d rows failed (%s: %s); prefilling them when they join",
                        len(rows), type(exc).__name__, str(exc)[:200])
            return None

    def take(self, n: int) -> list[Prefilled]:
        """The prefilled chunks of the queue's first ``n`` rows, as far as they were prefetched
        (fewer rows than ``n`` if not; the caller prefills the rest)."""
        out: list[Prefilled] = []
        while n > 0 and self.chunks:
            rows, fut = self.chunks[0]
            done = fut.result()
            if done is None:
                self.failed = True
                self.close()
                break
            if self.on_cuda:
                self._hand_over(done)
            k = min(n, len(rows))
            out.append(done.part(0, k, self.torch))
            self.engine.stats["prefetched_rows"] = self.engine.stats.get("prefetched_rows", 0) + k
            if k == len(rows):
                self.chunks.popleft()
            else:  # the chunk's other rows stay at the head of the queue
                rest = done.part(k, len(rows) - k, self.torch)
                self.chunks[0] = (rows[k:], _resolved(rest))
            n -= k
        return out

    def _hand_over(self, done: Prefilled) -> None:
        """Make the consuming stream wait for the prefill and own its tensors' lifetime."""
        if done.event is None:
            return
        main = self.torch.cuda.current_stream(self.engine.device)
        main.wait_event(done.event)
        done.event = None
        tensors = [done.pos_ids, done.logits] + [v for v in done.x.values() if v is not None]
        for layer in done.cache.layers:
            tensors += [layer.keys, layer.values]
        for t in tensors:
            t.record_stream(main)

    def close(self) -> None:
        """Wait for the worker and drop whatever was not taken."""
        for _, fut in self.chunks:
            fut.result()
        self.chunks.clear()
        if self.on_cuda:
            self.pool.shutdown(wait=True)


def _resolved(value) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut
