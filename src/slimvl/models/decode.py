"""A lean decode loop: one token through the Qwen3-VL text decoder with a preallocated KV cache.

`steps.decode_step` runs transformers' `Qwen3VLTextModel.forward`, whose per-token cost outside the
matmuls (causal mask creation, `DynamicCache` concatenation, kwargs plumbing through every layer, and in
bf16 a slow grouped-query SDPA path) is a sixth of a 2B decode step. `LeanDecoder.step` does the same
arithmetic with the model's own modules (embedding, norms, projections, MLP, lm_head, rotary embedding),
looked up at every step so that modules swapped in place (int8 quantization) are used, and writes
keys/values into a `StaticKVCache` instead of concatenating.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from transformers import DynamicCache, Qwen3VLForConditionalGeneration
from transformers.cache_utils import DynamicLayer


class BufferedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are the first positions of preallocated buffers.

    transformers' attention appends to it as to any `DynamicLayer`, but into the buffers instead of a
    fresh concatenation, so a prefill leaves no cache tensors scattered between its freed activations
    (at 2B the heap grew ~5 MB per decoder layer around them) and decoding reads the same buffers.
    """

    def __init__(self, keys_buffer: torch.Tensor, values_buffer: torch.Tensor) -> None:
        super().__init__()
        self.keys_buffer, self.values_buffer = keys_buffer, values_buffer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = self.keys_buffer.device
        self.keys, self.values = self.keys_buffer[:, :, :0], self.values_buffer[:, :, :0]
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if end > self.keys_buffer.shape[2]:
            raise ValueError(f"cache is full: {self.keys_buffer.shape[2]} positions, {end} needed")
        self.keys_buffer[:, :, start:end].copy_(key_states)
        self.values_buffer[:, :, start:end].copy_(value_states)
        self.keys, self.values = self.keys_buffer[:, :, :end], self.values_buffer[:, :, :end]
        return self.keys, self.values

    def keep(self, keep_mask: torch.Tensor) -> None:
        """Keep only the positions where `keep_mask` (length,) is True, moved to the front in order."""
        keep_mask = keep_mask.to(self.keys_buffer.device)
        kept = int(keep_mask.sum())
        self.keys_buffer[:, :, :kept] = self.keys[:, :, keep_mask]
        self.values_buffer[:, :, :kept] = self.values[:, :, keep_mask]
        self.keys, self.values = self.keys_buffer[:, :, :kept], self.values_buffer[:, :, :kept]


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
    def allocate(cls, text_model: torch.nn.Module, capacity: int, dtype: torch.dtype) -> StaticKVCache:
        """An empty cache of `capacity` positions for each layer of the text decoder `text_model`, with
        that layer's key/value heads (structured pruning may leave layers with different counts); its
        pages are only touched as positions are written."""
        head_dim = text_model.config.head_dim
        shapes = [
            (1, layer.self_attn.k_proj.out_features // head_dim, capacity, head_dim)
            for layer in text_model.layers
        ]
        devices = [layer_device(layer) for layer in text_model.layers]
        return cls(
            [torch.empty(shape, dtype=dtype, device=d) for shape, d in zip(shapes, devices, strict=True)],
            [torch.empty(shape, dtype=dtype, device=d) for shape, d in zip(shapes, devices, strict=True)],
            0,
        )

    def prefill_cache(self) -> DynamicCache:
        """A `DynamicCache` for transformers' decoder layers that fills these buffers (`BufferedLayer`s);
        after the prefill, `take_length` makes its positions this cache's."""
        cache = DynamicCache()
        cache.layers = [BufferedLayer(k, v) for k, v in zip(self.keys, self.values, strict=True)]
        cache.layer_class_to_replicate = None  # every layer is there: a model with more layers fails
        return cache

    def take_length(self, cache: DynamicCache) -> None:
        """Adopt the length `cache` (from `prefill_cache`) filled; every layer must hold the same."""
        self.length = _filled_length(cache)

    @classmethod
    def from_dynamic(cls, cache: DynamicCache, capacity: int) -> StaticKVCache:
        """Copy a prefilled `DynamicCache` (batch 1, every layer of one length) into `capacity` positions."""
        length = _filled_length(cache)
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
        return cls(keys, values, length)


def layer_device(layer: torch.nn.Module) -> torch.device:
    """The device a decoder layer's weights are on (a GPU placement moves some layers there)."""
    k_proj = layer.self_attn.k_proj
    return next(itertools.chain(k_proj.parameters(), k_proj.buffers())).device


def _filled_length(cache: DynamicCache) -> int:
    """The positions every layer of `cache` holds (ValueError if the layers differ)."""
    lengths = {layer.get_seq_length() for layer in cache.layers}
    if len(lengths) != 1:
        raise ValueError(f"cache layers hold different lengths {sorted(lengths)}; expected one length")
    return lengths.pop()


def _rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)` for a Qwen3-VL RMSNorm: in fp32 by PyTorch's one `rms_norm` op, the same numbers as the
    module's five (upcast, mean of squares, rsqrt, scale, weight) at a fraction of their per-op cost,
    which at one token is most of a norm's time (2B: ~6 ms of an ~80 ms step); other dtypes by the module,
    which rounds between its steps."""
    if x.dtype != torch.float32:
        return norm(x)
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


class LeanDecoder:
    """Runs single tokens through a Qwen3-VL text decoder, as `steps.decode_step` does.

    In fp32 the operations are transformers' own, in the same order (the norms by the equivalent fused
    op): the logits are identical. In bf16 and fp16 transformers' grouped-query SDPA kernel is several
    times slower than passing the query heads that share a key/value head as that head's queries, so this
    runs the latter, whose attention output differs from the former's by one rounding step in the last
    bit now and then.
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
            if hidden.device != keys.device:  # into (or back out of) the layers a GPU holds
                hidden, cos, sin = hidden.to(keys.device), cos.to(keys.device), sin.to(keys.device)
            attn = layer.self_attn
            x = _rms_norm(layer.input_layernorm, hidden)
            q = _rms_norm(attn.q_norm, attn.q_proj(x).view(1, -1, 1, head_dim))
            k = _rms_norm(attn.k_norm, attn.k_proj(x).view(1, -1, 1, head_dim))
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
            hidden = hidden + layer.mlp(_rms_norm(layer.post_attention_layernorm, hidden))
        cache.length = n + 1
        hidden = hidden.to(text.norm.weight.device)
        return self.model.lm_head(_rms_norm(text.norm, hidden)).view(1, -1)
