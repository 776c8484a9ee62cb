from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from transformers import DynamicCache, Qwen3VLForConditionalGeneration

from slimvl.models.decode import LeanDecoder, StaticKVCache, _rms_norm
from slimvl.models.loader import LoadedModel, load_model
from slimvl.models.steps import DecoderSequence, build_sequence, decode_step, encode_images, prefill

QUESTION = "Which shape is red?"


@pytest.fixture(scope="module")
def bf16_model(small_checkpoint: Path) -> LoadedModel:
    return load_model(str(small_checkpoint), "bf16")


def _sequence(loaded: LoadedModel, images: list[Image.Image]) -> DecoderSequence:
    inputs = loaded.preprocessor(images, QUESTION)
    with torch.inference_mode():
        return build_sequence(loaded.model, inputs, encode_images(loaded.model, inputs))


def _greedy_both(
    model: Qwen3VLForConditionalGeneration, seq: DecoderSequence, steps: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], StaticKVCache, DynamicCache]:
    """Greedy decoding from one prefill by `LeanDecoder.step` and by `decode_step`, each feeding its own tokens."""
    with torch.inference_mode():
        logits, cache = prefill(model, seq)
    static = StaticKVCache.from_dynamic(cache, capacity=seq.length + steps)
    decoder = LeanDecoder(model)
    lean_token = hf_token = logits[0, -1].argmax()
    lean_logits, hf_logits = [], []
    with torch.inference_mode():
        for i in range(steps):
            lean_logits.append(decoder.step(lean_token, seq.next_position + i, static))
            hf_logits.append(decode_step(model, hf_token, seq.next_position + i, cache)[:, -1])
            lean_token, hf_token = lean_logits[-1][0].argmax(), hf_logits[-1][0].argmax()
    return lean_logits, hf_logits, static, cache


@pytest.mark.parametrize("which", [["square"], ["tall", "square"]])
def test_matches_decode_step_fp32(
    which: list[str], small_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image
) -> None:
    images = [{"square": square_image, "tall": tall_image}[name] for name in which]
    seq = _sequence(small_model, images)
    lean, hf, static, cache = _greedy_both(small_model.model, seq, steps=20)

    assert [int(x.argmax()) for x in lean] == [int(x.argmax()) for x in hf]
    for a, b in zip(lean, hf, strict=True):
        assert a.shape == (1, small_model.model.config.text_config.vocab_size)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert static.length == static.capacity == cache.get_seq_length() == seq.length + 20
    for i, layer in enumerate(cache.layers):
        torch.testing.assert_close(static.keys[i], layer.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(static.values[i], layer.values, atol=1e-5, rtol=1e-5)


def test_matches_decode_step_bf16(
    bf16_model: LoadedModel, square_image: Image.Image, tall_image: Image.Image
) -> None:
    seq = _sequence(bf16_model, [tall_image, square_image])
    lean, hf, _, _ = _greedy_both(bf16_model.model, seq, steps=10)

    assert lean[0].dtype == torch.bfloat16
    assert [int(x.argmax()) for x in lean] == [int(x.argmax()) for x in hf]
    for a, b in zip(lean, hf, strict=True):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)


def test_from_dynamic(small_model: LoadedModel, square_image: Image.Image) -> None:
    seq = _sequence(small_model, [square_image])
    with torch.inference_mode():
        _, cache = prefill(small_model.model, seq)
    static = StaticKVCache.from_dynamic(cache, capacity=seq.length + 3)

    assert static.length == seq.length and static.capacity == seq.length + 3
    for i, layer in enumerate(cache.layers):
        assert static.keys[i].dtype == layer.keys.dtype
        assert torch.equal(static.keys[i][:, :, : seq.length], layer.keys)
        assert torch.equal(static.values[i][:, :, : seq.length], layer.values)
    with pytest.raises(ValueError, match="capacity"):
        StaticKVCache.from_dynamic(cache, capacity=seq.length - 1)


def test_prefill_into_preallocated_cache(small_model: LoadedModel, square_image: Image.Image) -> None:
    # The pipeline's path: the prefill writes into the decode cache; same logits, same cache, same decoding.
    model = small_model.model
    seq = _sequence(small_model, [square_image])
    with torch.inference_mode():
        reference_logits, reference_cache = prefill(model, seq)
        static = StaticKVCache.allocate(model.model.language_model, seq.length + 3, seq.inputs_embeds.dtype)
        logits, cache = prefill(model, seq, static.prefill_cache())
        static.take_length(cache)

    assert torch.equal(logits, reference_logits)
    assert static.length == seq.length and static.capacity == seq.length + 3
    for i, layer in enumerate(reference_cache.layers):
        assert torch.equal(static.keys[i][:, :, : seq.length], layer.keys)
        assert torch.equal(static.values[i][:, :, : seq.length], layer.values)

    copied = StaticKVCache.from_dynamic(reference_cache, capacity=seq.length + 3)
    decoder = LeanDecoder(model)
    token = reference_logits[0, -1].argmax()
    with torch.inference_mode():
        steps = [decoder.step(token, seq.next_position, c) for c in (static, copied)]
    assert torch.equal(steps[0], steps[1])


def test_preallocated_cache_refuses_to_overflow(small_model: LoadedModel, square_image: Image.Image) -> None:
    model = small_model.model
    seq = _sequence(small_model, [square_image])
    static = StaticKVCache.allocate(model.model.language_model, seq.length - 1, seq.inputs_embeds.dtype)
    with torch.inference_mode(), pytest.raises(ValueError, match="cache is full"):
        prefill(model, seq, static.prefill_cache())


def test_int_token_and_full_cache(small_model: LoadedModel, square_image: Image.Image) -> None:
    seq = _sequence(small_model, [square_image])
    with torch.inference_mode():
        _, cache = prefill(small_model.model, seq)
    decoder = LeanDecoder(small_model.model)
    by_tensor = StaticKVCache.from_dynamic(cache, capacity=seq.length + 1)
    by_int = StaticKVCache.from_dynamic(cache, capacity=seq.length + 1)

    a = decoder.step(torch.tensor(7), seq.next_position, by_tensor)
    b = decoder.step(7, seq.next_position, by_int)

    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="full"):
        decoder.step(7, seq.next_position + 1, by_int)


class _HalfOutput(nn.Module):
    """A projection replaced in place, as quantization does: no `.weight`, different outputs."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * 0.5


def test_uses_modules_replaced_after_construction(
    small_model: LoadedModel, square_image: Image.Image
) -> None:
    model = copy.deepcopy(small_model.model)
    decoder = LeanDecoder(model)
    for layer in model.model.language_model.layers:
        layer.self_attn.q_proj = _HalfOutput(layer.self_attn.q_proj)
        layer.mlp.down_proj = _HalfOutput(layer.mlp.down_proj)
    seq = _sequence(small_model, [square_image])
    with torch.inference_mode():
        logits, cache = prefill(model, seq)
        static = StaticKVCache.from_dynamic(cache, capacity=seq.length + 1)
        token = logits[0, -1].argmax()
        lean = decoder.step(token, seq.next_position, static)
        hf = decode_step(model, token, seq.next_position, cache)[:, -1]
        original = decode_step(
            small_model.model, token, seq.next_position, prefill(small_model.model, seq)[1]
        )

    torch.testing.assert_close(lean, hf, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(lean, original[:, -1], atol=1e-3)


def test_fused_rms_norm_is_the_module_bit_for_bit(small_model: LoadedModel, bf16_model: LoadedModel) -> None:
    torch.manual_seed(0)
    layer = small_model.model.model.language_model.layers[0]
    norms = [
        layer.input_layernorm,
        layer.post_attention_layernorm,
        layer.self_attn.q_norm,
        layer.self_attn.k_norm,
    ]
    with torch.inference_mode():
        for norm in norms:
            x = torch.randn(1, 3, norm.weight.shape[0]) * 7
            assert torch.equal(_rms_norm(norm, x), norm(x))
        bf16_norm = bf16_model.model.model.language_model.norm  # other dtypes: the module itself
        x = torch.randn(1, 1, bf16_norm.weight.shape[0], dtype=torch.bfloat16)
        assert torch.equal(_rms_norm(bf16_norm, x), bf16_norm(x))
