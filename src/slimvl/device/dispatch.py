"""Put a loaded model's parts where a `Placement` says: the placed decoder layers (and the vision tower)
converted to their device formats and moved, with accelerate's `AlignDevicesHook` on each moved part so
that its inputs follow it there; the final norm takes the hidden state back to the CPU. The lean decode
loop (`models.decode`) and the KV cache read each layer's device from the layer itself."""

from __future__ import annotations

from accelerate.hooks import AlignDevicesHook, add_hook_to_module
from torch import nn
from transformers import Qwen3VLForConditionalGeneration

from slimvl.device.modules import convert_linears
from slimvl.device.placement import Placement, PlacementNeeds
from slimvl.device.rules import DeviceRules
from slimvl.precision.int4_modules import Int4Linear
from slimvl.quant import Int8Linear

BYTES_FP32 = 4
DEFAULT_CONTEXT_TOKENS = 2048  # the KV cache each GPU layer is planned for
SKIPPED_KWARGS = ("cache", "past_key_values")  # cache objects are not moved: their buffers already are


def device_bytes(module: nn.Module) -> int:
    """Bytes `module` will hold in its device format (`device.modules`), computed without converting:
    int8 and int4 linears by what their device format keeps (a packed int8 kernel may have released
    `qweight`), anything else by its own tensors."""
    if isinstance(module, Int8Linear):
        extra = (module.bias is not None) + 1  # w_scale, bias
        return module.out_features * module.in_features + BYTES_FP32 * (
            extra * module.out_features + (module.in_features if module.smooth is not None else 0)
        )
    if isinstance(module, Int4Linear):
        return sum(t.numel() * t.element_size() for t in (module.codes, module.mult, module.row_scale))
    children = list(module.children())
    own = sum(
        t.numel() * t.element_size()
        for t in [*module.parameters(False), *module.buffers(False)]
        if t is not None
    )
    return own + sum(device_bytes(child) for child in children)


def _largest_linear(root: nn.Module) -> tuple[int, int]:
    shapes = [
        (m.out_features, m.in_features)
        for m in root.modules()
        if hasattr(m, "out_features") and hasattr(m, "in_features")
    ]
    return max(shapes, key=lambda s: s[0] * s[1], default=(0, 0))


def placement_needs(
    model: Qwen3VLForConditionalGeneration, context_tokens: int = DEFAULT_CONTEXT_TOKENS
) -> PlacementNeeds:
    text = model.model.language_model
    config = text.config
    kv = []
    for layer in text.layers:
        kv_width = layer.self_attn.k_proj.out_features
        kv.append(2 * kv_width * context_tokens * BYTES_FP32)
    rows, cols = _largest_linear(text.layers)
    widened = rows * cols * BYTES_FP32  # one weight widened to fp32 at a time
    # a prefill's activations: the MLP's three intermediate-wide rows and one layer's attention scores
    activations = context_tokens * (3 * config.intermediate_size + 4 * config.hidden_size) * BYTES_FP32
    scores = config.num_attention_heads * context_tokens * context_tokens * BYTES_FP32
    visual = model.model.visual
    return PlacementNeeds(
        layer_bytes=tuple(device_bytes(layer) for layer in text.layers),
        kv_bytes_per_layer=tuple(kv),
        vision_bytes=device_bytes(visual) + widened,
        workspace_bytes=widened + activations + scores,
    )


def dispatch(model: Qwen3VLForConditionalGeneration, placement: Placement, rules: DeviceRules) -> None:
    """Move the placed parts to `placement.device` in their device formats (in place)."""
    if not placement.on_gpu:
        return
    text = model.model.language_model
    for index in placement.gpu_layers:
        _move(text.layers[index], placement.device, rules, keep_outputs_there=True)
    if placement.gpu_layers:
        add_hook_to_module(text.norm, AlignDevicesHook(execution_device="cpu", skip_keys=SKIPPED_KWARGS))
    if placement.vision_on_gpu:
        _move(model.model.visual, placement.device, rules, keep_outputs_there=False)


def _move(part: nn.Module, device: str, rules: DeviceRules, keep_outputs_there: bool) -> None:
    convert_linears(part, rules)
    part.to(device)
    hook = AlignDevicesHook(
        execution_device=device, io_same_device=not keep_outputs_there, skip_keys=SKIPPED_KWARGS
    )
    add_hook_to_module(part, hook)
