"""The Mllama vision tower for the engine's prefill: HF's function in fewer passes over memory.

HF's ``MllamaVisionModel`` (40 layers over ``tiles x 1,608`` tokens an image) spends, besides
its GEMMs and attention, whole passes over its activations that change nothing it computes:
three q/k/v GEMMs that read the same input, the attention output concatenated and then
copied again into the layout ``o_proj`` reads, every layer's hidden state kept (32 of them,
131 MB each at a prefill of 8 receipts, where 5 are used), and a dense mask of
``(tiles x 1,608)^2`` per image built by a matmul. ``VisionTower`` runs the same layers:

- q|k|v as one GEMM over a weight whose rows are re-laid as one tensor (the modules' weights
  become views of it: no extra memory; ``generate`` keeps calling the same modules);
- the attention of ``prefill_attention.tile_attention`` (mask-free flash call, padding
  queries recomputed against the real keys and written in place, output in the layout
  ``o_proj`` reads), planned from ``aspect_ratio_mask`` instead of from the dense mask;
- only the intermediate layers the projector reads are kept;
- with ``compile_ops``, each residual add (with a global layer's tanh gate) and the
  LayerNorm after it are one compiled kernel.

Same function as HF's tower up to the order of summation (tests/unit/test_vision_tower.py
compares both in float32 on the tiny Mllama). Images run together when they use the same
tiles (the engine sorts rows by tile count, so a prefill mostly holds one pattern); a batch
that mixes patterns runs once per pattern.
"""

from __future__ import annotations

from extractor.engine.mllama_decode import _fuse_rows
from extractor.engine.prefill_attention import TilePlan, tile_attention

__all__ = ["TilePlan", "VisionTower", "add_layer_norm", "tile_attention"]


def add_layer_norm(x, y, gate, weight, bias, eps: float):
    """``x + gate * y`` (``gate`` None: ``x + y``) and its LayerNorm: (new residual, normed)."""
    import torch.nn.functional as F

    x = x + (y if gate is None else gate * y)
    return x, F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


class VisionTower:
    """``VisionTower(model.model.vision_model)(pixel_values, aspect_ratio_ids,
    aspect_ratio_mask)`` returns what the HF tower's ``last_hidden_state`` holds."""

    def __init__(self, vision_model, *, compile_ops: bool = False, small_tail: int = 64):
        import torch

        self.vm = vision_model
        self.small_tail = small_tail
        self.qkv = {id(layer): _fuse_rows([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj])
                    for layer in self._layers()}
        self.add_ln = torch.compile(add_layer_norm, fullgraph=True) if compile_ops else add_layer_norm
        self._plans: dict[tuple, TilePlan] = {}

    def _layers(self):
        return list(self.vm.transformer.layers) + list(self.vm.global_transformer.layers)

    def plan(self, used_tiles: tuple[bool, ...], tile_len: int, device) -> TilePlan:
        key = (used_tiles, tile_len)
        if key not in self._plans:
            self._plans[key] = TilePlan.of(list(used_tiles), tile_len, self.vm.num_patches, device)
        return self._plans[key]

    def __call__(self, pixel_values, aspect_ratio_ids, aspect_ratio_mask):
        """Images that use the same tiles go through the layers together (one padding plan);
        a batch mixing tile counts runs once per count, each image's states put back in place."""
        bsz, media, tiles = pixel_values.shape[:3]
        pix = pixel_values.reshape(bsz * media, 1, *pixel_values.shape[2:])
        ids = aspect_ratio_ids.reshape(bsz * media, 1)
        groups: dict[tuple, list[int]] = {}
        for row, used in enumerate(aspect_ratio_mask.reshape(bsz * media, -1).bool().tolist()):
            groups.setdefault(tuple(used), []).append(row)
        if len(groups) == 1:
            out = self._run(pix, ids, next(iter(groups)))
        else:
            out = None
            for used, rows in groups.items():
                idx = ids.new_tensor(rows)
                part = self._run(pix.index_select(0, idx), ids.index_select(0, idx), used)
                if out is None:
                    out = part.new_empty((bsz * media, *part.shape[1:]))
                out.index_copy_(0, idx, part)
        return out.reshape(bsz, media, tiles, self.vm.num_patches, -1)

    def _run(self, pixel_values, aspect_ratio_ids, used_tiles: tuple[bool, ...]):
        """Images of one tile pattern (rows, 1, tiles, ...): (rows, 1, tiles, patches, dim)."""
        import torch

        vm = self.vm
        rows, _, tiles = pixel_values.shape[:3]
        h, tile_len = self._embed(pixel_values, aspect_ratio_ids)
        plan = self.plan(used_tiles, tile_len, h.device)
        dim = h.shape[-1]
        h, kept = self._encoder(vm.transformer.layers, h.view(rows, tiles * tile_len, dim), plan,
                                keep=vm.intermediate_layers_indices, final_norm=vm.layernorm_post)
        h = vm.post_tile_positional_embedding(h.reshape(rows, tiles, tile_len, dim), aspect_ratio_ids)
        h, _ = self._encoder(vm.global_transformer.layers, h.reshape(rows, tiles * tile_len, dim), plan)
        patches = vm.num_patches
        h = h.reshape(rows, tiles, tile_len, dim)[:, :, :patches]
        inter = torch.stack(kept, dim=-1).reshape(rows, tiles, tile_len, -1)[:, :, :patches]
        return torch.cat([h, inter], dim=-1)

    def _embed(self, pixel_values, aspect_ratio_ids):
        """HF's embedding of the tiles (patches, tile and position embeddings, class token,
        LayerNorm, padding to a multiple of 8), unchanged: ((rows, tiles, tile_len, dim), tile_len)."""
        import torch.nn.functional as F

        vm = self.vm
        bsz, media, tiles, ch, height, width = pixel_values.shape
        w = vm.patch_embedding.weight
        x = vm.patch_embedding(pixel_values.reshape(-1, ch, height, width).to(w.device, w.dtype))
        x = x.flatten(2).transpose(1, 2)
        _, patches, dim = x.shape
        ar_ids = aspect_ratio_ids.reshape(bsz * media, -1)
        x = vm.pre_tile_positional_embedding(x.reshape(bsz * media, tiles, -1, dim), ar_ids)
        x = vm.apply_class_embedding(x.reshape(bsz * media * tiles, patches, dim))
        x = vm.gated_positional_embedding(x.reshape(bsz * media, tiles, patches + 1, dim), ar_ids)
        x = vm.layernorm_pre(x)
        pad = (8 - x.shape[-2] % 8) % 8
        x = F.pad(x, (0, 0, 0, pad))
        return x, x.shape[2]

    def _encoder(self, layers, h, plan: TilePlan, *, keep=(), final_norm=None):
        """One of HF's encoders over ``h``; each residual add is fused with the next LayerNorm
        (the next layer's first, the MLP's, or ``final_norm`` after the last layer). Returns
        (the last residual, normed by ``final_norm`` when given; the residuals after ``keep``)."""
        kept = []
        normed = None
        for i, layer in enumerate(layers):
            if normed is None:
                normed = layer.input_layernorm(h)
            attn = self._attention(layer, normed, plan)
            gate_attn = layer.gate_attn.tanh() if layer.is_gated else None
            ln2 = layer.post_attention_layernorm
            h, normed = self.add_ln(h, attn, gate_attn, ln2.weight, ln2.bias, ln2.eps)
            mlp = layer.mlp(normed)
            gate_ffn = layer.gate_ffn.tanh() if layer.is_gated else None
            nxt = layers[i + 1].input_layernorm if i + 1 < len(layers) else final_norm
            if nxt is None:
                h = h + (mlp if gate_ffn is None else gate_ffn * mlp)
                normed = None
            else:
                h, normed = self.add_ln(h, mlp, gate_ffn, nxt.weight, nxt.bias, nxt.eps)
            if i in keep:
                kept.append(h)
        return (normed if final_norm is not None else h), kept

    def _attention(self, layer, x, plan: TilePlan):
        import torch.nn.functional as F

        attn = layer.self_attn
        rows, n, _ = x.shape
        qkv = F.linear(x, self.qkv[id(layer)]).view(rows, n, 3, attn.num_heads, attn.head_dim)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        return attn.o_proj(tile_attention(q, k, v, plan, attn.scaling, self.small_tail))
