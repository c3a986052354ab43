"""Running rows through a decode batch of fixed slots: static batches and continuous refill.

A decode batch has ``B`` slots (its captured graph's shape). The first ``B`` rows of a
group are prefilled together, as ``generate`` would; every ``check_every`` steps the host
reads which slots finished (EOS or their length limit), takes their tokens out, and, with
``refill`` on, prefills waiting rows of the same tile count into the free slots while the
others keep decoding: nobody waits for the slowest row of a batch.

How a row joins a running batch: all rows write the cache position ``cur`` each step (one
position for the whole batch, as the graph wants), and the cache is a ring of ``longest
prompt + max_new + one check interval`` positions (``cur`` wraps), so a newcomer's prompt
is placed to end just before ``cur`` (wrapping; the rest of its cache row masked off),
its rotary positions count from its own first token (keys are cached already rotated, so
where a key sits in the ring does not matter), and its first token comes from its own
prefill logits through the same choice as every step (min-new-tokens rule, grammar mask,
log-probability). A row's prompt and answer never span more than the ring, so nothing it
still needs is overwritten, and masked keys get weight 0: a row's tokens are what it
would get alone (tests/unit/test_engine.py checks them against ``generate``). The step
reads no more cache than a static batch of the same prompt length.
"""

from __future__ import annotations

import time
from collections import deque
from types import SimpleNamespace
from typing import Any

from extractor.engine.mllama_decode import DecodeState, decode_step, select_next
from extractor.engine.prefetch import Prefetcher


class SlotScheduler:
    """Mixin of ``MllamaStaticEngine``: the host side of a decode batch (see the module doc)."""

    refill: bool
    refill_check_every: int
    refill_min_rows: int
    overlap_prefill: bool
    _prefetch: Prefetcher | None = None

    # ---------------------------------------------------------------- a group of rows
    def _run_group(self, group: list[int], inputs, cap: int, max_new: int, limits) -> dict[int, Any]:
        """{row: (tokens, logprobs)} for every row of ``group`` (one tile count when refilling)."""
        queue = deque(group)
        results: dict[int, Any] = {}
        while queue:
            first = [queue.popleft() for _ in range(min(cap, len(queue)))]
            self._run_batch(first, queue if self.refill else deque(), inputs, max_new, limits, results)
        return results

    def _subset(self, inputs, rows: list[int]) -> dict[str, Any]:
        torch = self._torch
        idx = torch.tensor(rows, device=self.device)
        return {k: (v.index_select(0, idx) if v is not None else None) for k, v in inputs.items()}

    def _run_batch(self, first: list[int], queue: deque, inputs, max_new: int, limits, results) -> None:
        torch = self._torch
        x = self._subset(inputs, first)
        slack = max(self.eos_check_every, self.refill_check_every)  # a stretch may end past a row's last step
        lengths = inputs["attention_mask"].sum(-1)
        longest = max(int(lengths[r]) for r in list(first) + list(queue))
        width = int(x["attention_mask"].sum(0).gt(0).sum())  # the batch's prompt width once trimmed
        plen, cross_bias, row_mask = self._prepare_chunk(x, max_new, max(longest, width) - width + max_new + slack)
        st, bsz = self._state, len(first)
        # This stream only: a prefill running ahead on another stream is not waited for.
        sync = torch.cuda.current_stream(self.device).synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        am = x["attention_mask"]
        pos_ids = (am.long().cumsum(-1) - 1).masked_fill(am == 0, 0)
        first_logits = torch.empty(bsz, self.weights.lm_head.shape[0], device=self.device, dtype=torch.float32)
        for r0 in range(0, bsz, self.prefill_batch):
            r1 = min(bsz, r0 + self.prefill_batch)
            first_logits[r0:r1] = self._prefill(x, pos_ids, slice(r0, r1), 0)
        self._reset_state(st, am, pos_ids, plen, cross_bias, row_mask, limits, first)
        rules = self._grammar.new_batch(bsz, max_new) if self._grammar is not None else None
        if rules is not None:
            st.allow.copy_(rules.fill())
        select_next(first_logits, st)
        host = self._host_buffers(st, rules)
        sync()
        self.stats["prefill_s"] += time.perf_counter() - t0
        slots: list[int | None] = list(first)
        left = [int(limits[1][row]) - 1 for row in first]  # steps each slot's row may still take
        steps = 0
        self._prefetch = Prefetcher(self, inputs, depth=bsz) if queue and self.overlap_prefill else None
        try:
            steps = self._decode_loop(st, slots, left, queue, inputs, plen, max_new, limits, rules, host, results)
        finally:
            if self._prefetch is not None:
                self._prefetch.close()
                self._prefetch = None
        self.stats["decode_steps"] += steps
        self.stats["ring_laps"] = max(self.stats.get("ring_laps", 0), (plen + steps) // st.self_valid.shape[1])
        self.stats["batches"] += 1
        self.stats["cuda_graph"] = self._graph is not None

    def _decode_loop(self, st, slots, left, queue, inputs, plen, max_new, limits, rules, host, results) -> int:
        """Decode stretches, harvest finished rows, let waiting rows join; returns the steps run."""
        torch = self._torch
        sync = torch.cuda.current_stream(self.device).synchronize if self.device.type == "cuda" else (lambda: None)
        steps = 0
        while True:
            if self._prefetch is not None:
                self._prefetch.fill(queue)
            t1 = time.perf_counter()
            every = self.refill_check_every if queue else self.eos_check_every
            stretch = min(every, max((n for n, row in zip(left, slots, strict=True) if row is not None), default=0))
            ran = self._run_steps(st, rules, host, stretch) if stretch > 0 else 0
            steps += ran
            left = [n - ran for n in left]
            self._harvest(st, slots, results)
            sync()
            self.stats["decode_s"] += time.perf_counter() - t1
            free = sum(row is None for row in slots)
            if queue and free >= min(self.refill_min_rows, len(queue), len(slots)):
                cur = (plen + steps) % st.self_valid.shape[1]
                for s in self._admit(queue, slots, inputs, cur, max_new, limits, rules, host):
                    left[s] = int(limits[1][slots[s]]) - 1
            if all(row is None for row in slots):
                return steps

    def _reset_state(self, st: DecodeState, am, pos_ids, plen: int, cross_bias, row_mask, limits, rows) -> None:
        """Every buffer a captured step reads set for this batch (none keeps the last batch's values)."""
        torch = self._torch
        min_new, max_rows = limits
        idx = torch.tensor(rows)
        st.tok.zero_()
        st.pos.copy_(pos_ids[:, -1] + 1)
        st.cur.fill_(plen)
        st.row_step.zero_()
        st.min_new.copy_(min_new[idx])
        st.max_new_row.copy_(max_rows[idx])
        st.finished.zero_()
        st.out.fill_(self.pad_id)
        if st.logp is not None:
            st.logp.zero_()
        st.self_valid.zero_()
        st.self_valid[:, :plen] = am.bool()
        if row_mask is not None:
            st.row_mask.copy_(row_mask[:, 0])
            if cross_bias is not None:
                st.cross_bias.copy_(cross_bias)

    # ---------------------------------------------------------------- steps
    def _host_buffers(self, st: DecodeState, rules):
        """Pinned host copies for the grammar's per-step exchange (None when unconstrained)."""
        if rules is None:
            return None
        torch = self._torch
        on_cuda = self.device.type == "cuda"
        host = SimpleNamespace(
            tok=torch.empty(st.tok.shape, dtype=torch.long, pin_memory=on_cuda),
            mask=torch.empty(st.allow.shape, dtype=torch.int32, pin_memory=on_cuda),
            ready=torch.cuda.Event() if on_cuda else None, on_cuda=on_cuda)
        host.tok.copy_(st.tok, non_blocking=on_cuda)
        return host

    def _run_steps(self, st: DecodeState, rules, host, n: int) -> int:
        """Up to ``n`` decode steps; fewer when every row has finished (the host learns that
        only at the end of a free-running stretch, so unconstrained batches run whole stretches)."""
        if rules is None:
            for _ in range(n):
                if self._graph is not None:
                    self._graph[0].replay()
                else:
                    decode_step(self.weights, st)
            return n
        for i in range(n):
            self._constrained_step(st, rules, host)
            if rules.all_done():
                return i + 1
        return n

    def _constrained_step(self, st: DecodeState, rules, host) -> None:
        """One step under a grammar: launch the forward, and while the device runs it feed
        the previous tokens to the matchers and fill the next mask on the host; then copy
        the mask over and launch the masked choice. The host reads each chosen token
        through a pinned buffer and an event: it waits for the last small choice kernel,
        never for the forward it overlaps."""
        if host.ready is not None:
            host.ready.record()
        if self._graph is not None:
            self._graph[0].replay()
        else:
            decode_step(self.weights, st)
        t0 = time.perf_counter()
        if host.ready is not None:
            host.ready.synchronize()
        t1 = time.perf_counter()
        rules.advance(host.tok.tolist())
        host.mask.copy_(rules.fill())
        self.stats["grammar_wait_s"] = self.stats.get("grammar_wait_s", 0.0) + t1 - t0
        self.stats["grammar_host_s"] = self.stats.get("grammar_host_s", 0.0) + time.perf_counter() - t1
        st.allow.copy_(host.mask, non_blocking=host.on_cuda)
        if self._graph is not None:
            self._graph[1].replay()
        else:
            select_next(st.logits, st)
        host.tok.copy_(st.tok, non_blocking=host.on_cuda)

    def _harvest(self, st: DecodeState, slots: list, results: dict) -> None:
        """Take the tokens of every finished row out of its slot (one host sync)."""
        finished = st.finished.tolist()
        if not any(f and row is not None for f, row in zip(finished, slots, strict=True)):
            return
        counts = st.row_step.tolist()
        out = st.out.cpu()
        logp = st.logp.cpu() if st.logp is not None else None
        for s, row in enumerate(slots):
            if row is not None and finished[s]:
                n = counts[s]
                results[row] = (out[s, :n].clone(), logp[s, :n].clone() if logp is not None else None)
                slots[s] = None

    # ---------------------------------------------------------------- refill
    def _admit(self, queue: deque, slots: list, inputs, cur: int, max_new: int, limits, rules, host) -> list[int]:
        """Place waiting rows in free slots so their prompts end at ``cur`` (wrapping round
        the ring); returns the slots they took. A row joins when its prompt and its answer
        fit in the ring. Rows prefilled ahead (``self._prefetch``) are only copied in; the
        others are prefilled now, ``prefill_batch`` at a time."""
        st = self._state
        free = [s for s, row in enumerate(slots) if row is None]
        lengths = inputs["attention_mask"].sum(-1)
        room = st.self_valid.shape[1] - max(self.eos_check_every, self.refill_check_every)
        n = 0
        while n < min(len(free), len(queue)) and int(lengths[queue[n]]) + int(limits[1][queue[n]]) <= room:
            n += 1
        if not n:
            return []
        t0 = time.perf_counter()
        chunks = self._prefetch.take(n) if self._prefetch is not None else []
        done = sum(len(c.rows) for c in chunks)
        waiting = list(queue)[done:n]
        chunks += [self._prefill_rows(inputs, waiting[i:i + self.prefill_batch])
                   for i in range(0, len(waiting), self.prefill_batch)]
        targets: list[int] = []
        for chunk in chunks:
            if not self._cross_compatible(chunk.x):
                break  # rows from here on stay queued (with the prefetched ones dropped)
            self._join_chunk(chunk, free[len(targets):len(targets) + len(chunk.rows)], cur, limits, rules)
            for s, row in zip(free[len(targets):], chunk.rows, strict=False):
                slots[s] = row
                targets.append(s)
        for _ in targets:
            queue.popleft()
        if len(targets) < n and self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None
        if host is not None and targets:
            host.tok.copy_(st.tok)
        self.stats["prefill_s"] += time.perf_counter() - t0
        self.stats["refilled_rows"] = self.stats.get("refilled_rows", 0) + len(targets)
        return targets

    def _join_chunk(self, chunk, targets: list[int], cur: int, limits, rules) -> None:
        """Copy a prefilled chunk into slots ``targets``: its prompt ends at ring position ``cur``."""
        torch = self._torch
        st = self._state
        am = chunk.x["attention_mask"]
        ring = st.self_valid.shape[1]
        where = torch.arange(cur - am.shape[1], cur, device=self.device).remainder(ring)
        idx = torch.tensor(targets, device=self.device)
        self._copy_cache(chunk.cache, idx, where)
        self._join_state(st, idx, chunk.x, am, chunk.pos_ids, where, limits, chunk.rows)
        self._choose_first(st, chunk.logits, idx, rules, targets)

    def _cross_compatible(self, x) -> bool:
        """Whether rows can share this batch's cross-attention layout (same kept tiles)."""
        from extractor.engine.mllama import _shared_valid_prefix

        st = self._state
        if st.cross_k[0] is None or x["cross_attention_mask"] is None:
            return st.cross_k[0] is None and x["cross_attention_mask"] is None
        bias, row_mask = self._cross_bias_of(x)
        if st.cross_bias is not None:
            return bias.shape[-1] == st.cross_bias.shape[-1]
        kept = st.cross_k[0].shape[2]
        if kept == self._cross_len(x):
            return not bool(bias.any())
        return _shared_valid_prefix(bias, row_mask) == kept

    def _cross_bias_of(self, x):
        from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

        return _prepare_cross_attention_mask(x["cross_attention_mask"][:, -1:], num_vision_tokens=self.num_patches,
                                             dtype=self.dtype)

    def _join_state(self, st: DecodeState, idx, x, am, pos_ids, where, limits, rows) -> None:
        torch = self._torch
        st.self_valid[idx] = False
        for j, slot in enumerate(idx.tolist()):
            st.self_valid[slot].index_copy_(0, where, am[j].bool())
        st.pos[idx] = pos_ids[:, -1] + 1
        if st.cross_k[0] is not None:
            bias, row_mask = self._cross_bias_of(x)
            st.row_mask[idx] = row_mask[:, 0]
            if st.cross_bias is not None:
                st.cross_bias[idx] = bias
        rows_t = torch.tensor(rows)
        st.min_new[idx] = limits[0][rows_t].to(self.device)
        st.max_new_row[idx] = limits[1][rows_t].to(self.device)

    def _choose_first(self, st: DecodeState, logits, idx, rules, targets: list[int]) -> None:
        """The joining rows' first tokens from their prefill logits, by the same choice as a step."""
        torch = self._torch
        n, width = len(targets), st.out.shape[1]
        allow = None
        if rules is not None:
            rules.reset_rows(targets)
            allow = rules.fill_rows(targets).to(self.device)
        sub = SimpleNamespace(
            finished=torch.zeros(n, dtype=torch.bool, device=self.device),
            row_step=torch.zeros(n, dtype=torch.long, device=self.device),
            min_new=st.min_new[idx], max_new_row=st.max_new_row[idx], eos=st.eos, allow=allow,
            bit_shifts=st.bit_shifts, pad_id=st.pad_id,
            logp=torch.zeros(n, width, device=self.device) if st.logp is not None else None,
            out=torch.full((n, width), st.pad_id, dtype=torch.long, device=self.device),
            tok=torch.zeros(n, dtype=torch.long, device=self.device))
        select_next(logits, sub)
        st.out[idx] = sub.out
        if st.logp is not None:
            st.logp[idx] = sub.logp
        st.tok[idx] = sub.tok
        st.row_step[idx] = sub.row_step
        st.finished[idx] = sub.finished
