"""A lean decode loop: one token through the Qwen3-VL text decoder with a preallocated KV cache.

`steps.decode_step` runs transformers' `Qwen3VLTextModel.forward`, whose per-token cost outside the
matmuls (causal mask creation, `DynamicCache` concatenation, kwargs plumbing through every layer, and in
bf16 a slow grouped-query SDPA path) is a sixth of a 2B decode step. `LeanDecoder.step` does the same
arithmetic with the model's own modules (embedding, norms, projections, MLP, lm_head, rotary embedding),
looked up at every step so that modules swapped in place (int8 quantization) are used, and writes
keys/values into a `StaticKVCache` instead of concatenating.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache, Qwen3VLForConditionalGeneration


class StaticKVCache:
    """Keys and values of every decoder layer in tensors of a fixed number of positions.

    `keys[i]` and `values[i]` are (1, kv_heads, capacity, head_dim); positions `[0, length)` are filled.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int) -> None:
        self.keys = keys
        self.values = values
        self.length = length

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[2])

    @classmethod
    def from_dynamic(cls, cache: DynamicCache, capacity: int, consume: bool = False) -> StaticKVCache:
        """Copy a prefilled `DynamicCache` (batch 1, every layer of one length) into `capacity` positions.

        `consume`: release each layer's tensors from `cache` once copied (leaving it empty), so the two
        caches never coexist in full: at 2B and 300 prompt tokens that is 70 MB less at the peak."""
        lengths = {layer.get_seq_length() for layer in cache.layers}
        if len(lengths) != 1:
            raise ValueError(f"cache layers hold different lengths {sorted(lengths)}; expected one length")
        length = lengths.pop()
        if capacity < length:
            raise ValueError(f"capacity: got {capacity}, allowed: >= the cached length {length}")
        keys, values = [], []
        for layer in cache.layers:
            for source, buffers in ((layer.keys, keys), (layer.values, values)):
                if source.shape[0] != 1:
                    raise ValueError(f"cache batch: got {source.shape[0]}, allowed: 1")
                buffer = source.new_empty(1, source.shape[1], capacity, source.shape[3])
                buffer[:, :, :length] = source
                buffers.append(buffer)
            if consume:
                layer.keys = layer.values = source.new_empty(1, source.shape[1], 0, source.shape[3])
        return cls(keys, values, length)


class LeanDecoder:
    """Runs single tokens through a Qwen3-VL text decoder, as `steps.decode_step` does.

    In fp32 the operations are transformers' own, in the same order: the logits are identical. In bf16
    and fp16 transformers' grouped-query SDPA kernel is several times slower than passing the query heads
    that share a key/value head as that head's queries, so this runs the latter, whose attention output
    differs from the former's by one rounding step in the last bit now and then.
    """

    def __init__(self, model: Qwen3VLForConditionalGeneration) -> None:
        self.model = model
        self.text = model.model.language_model
        config = self.text.config
        self.head_dim = config.head_dim
        self.groups = config.num_attention_heads // config.num_key_value_heads

    @torch.inference_mode()
    def step(self, token: int | torch.Tensor, position: int, cache: StaticKVCache) -> torch.Tensor:
        """Logits (1, vocab) of `token` at MRoPE position `position` (all three axes equal for text);
        appends the token's keys and values to `cache`."""
        n = cache.length
        if n >= cache.capacity:
            raise ValueError(f"cache is full: {cache.capacity} positions")
        text, head_dim = self.text, self.head_dim
        gqa = cache.keys[0].dtype == torch.float32
        query_shape = (1, -1, 1 if gqa else self.groups, head_dim)
        ids = token.view(1, 1) if isinstance(token, torch.Tensor) else torch.tensor([[token]])
        hidden = text.embed_tokens(ids)
        cos, sin = text.rotary_emb(hidden, torch.full((3, 1, 1), position))
        # rotate_half(x) * sin == roll(x, half) * (sin with its first half negated), exactly.
        half = head_dim // 2
        cos, sin = cos.view(head_dim), torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).view(head_dim)
        for layer, keys, values in zip(text.layers, cache.keys, cache.values, strict=True):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_norm(attn.q_proj(x).view(1, -1, 1, head_dim))
            k = attn.k_norm(attn.k_proj(x).view(1, -1, 1, head_dim))
            q = q * cos + torch.roll(q, half, -1) * sin
            torch.add(k * cos, torch.roll(k, half, -1) * sin, out=keys.narrow(2, n, 1))
            values.narrow(2, n, 1).copy_(attn.v_proj(x).view(1, -1, 1, head_dim))
            out = F.scaled_dot_product_attention(
                q.view(query_shape),
                keys.narrow(2, 0, n + 1),
                values.narrow(2, 0, n + 1),
                scale=attn.scaling,
                enable_gqa=gqa,
            )
            hidden = hidden + attn.o_proj(out.view(1, 1, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        cache.length = n + 1
        return self.model.lm_head(text.norm(hidden)).view(1, -1)
