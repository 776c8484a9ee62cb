"""Decoder layers pruned one at a time, each from the inputs the already-pruned layers before it give.

The calibration requests run once through the pipeline up to the first decoder layer, whose inputs
(hidden states and the rotary position embeddings) are kept with what the decoder adds after its first
layers (DeepStack features at the visual positions). Then, for each layer in order: observers collect
statistics of its linears' inputs while the layer runs on every request's inputs, the layer is pruned,
and it runs again to give the next layer's inputs. One pass through the vision encoder per request;
each decoder layer runs twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen3VLForConditionalGeneration
from transformers.masking_utils import create_causal_mask

from slimvl.models.hooks import InputObserver, RequestHooks, RunCalibration, StopRequest
from slimvl.models.steps import DecoderSequence


@dataclass
class LayerInputs:
    """One calibration request's input to a decoder layer, and what the decoder adds after its layers."""

    hidden: torch.Tensor  # (1, L, D)
    position_embeddings: tuple[torch.Tensor, torch.Tensor]
    position_ids: torch.Tensor | None
    visual_mask: torch.Tensor  # (1, L) bool
    deepstack: list[torch.Tensor]  # added at the visual positions after layers 0, 1, ...


class _RecordSequence(RequestHooks):
    seq: DecoderSequence | None = None

    def after_vision(self, seq: DecoderSequence) -> DecoderSequence:
        self.seq = seq
        return seq


def first_layer_inputs(run: RunCalibration, model: Qwen3VLForConditionalGeneration) -> list[LayerInputs]:
    """Each calibration request's input to decoder layer 0 (the rest of the request is skipped)."""
    recorder = _RecordSequence()
    found: list[LayerInputs] = []

    def observe(_layer: nn.Module, args: tuple, kwargs: dict) -> None:
        seq = recorder.seq
        has_visual = bool(seq.visual_mask.any())
        found.append(
            LayerInputs(
                args[0] if args else kwargs["hidden_states"],
                kwargs["position_embeddings"],
                kwargs.get("position_ids"),
                seq.visual_mask,
                list(seq.deepstack) if has_visual else [],
            )
        )
        raise StopRequest

    run({model.model.language_model.layers[0]: observe}, hooks=recorder)
    return found


def run_layer(model: Qwen3VLForConditionalGeneration, index: int, inputs: LayerInputs) -> torch.Tensor:
    """Decoder layer `index` over `inputs` (no cache), with its DeepStack addition: the next layer's input."""
    text = model.model.language_model
    mask = create_causal_mask(
        config=text.config,
        inputs_embeds=inputs.hidden,
        attention_mask=None,
        cache=None,
        position_ids=inputs.position_ids,
    )
    hidden = text.layers[index](
        inputs.hidden,
        position_embeddings=inputs.position_embeddings,
        attention_mask=mask,
        position_ids=inputs.position_ids,
    )
    if index < len(inputs.deepstack):
        hidden = text._deepstack_process(hidden, inputs.visual_mask, inputs.deepstack[index])
    return hidden


# (layer index, the layer) -> that layer's observers, then a function that prunes it once they have seen
# every request
LayerPruner = Callable[[int, nn.Module], tuple[Mapping[nn.Module, InputObserver], Callable[[], None]]]


@torch.inference_mode()
def prune_layer_by_layer(
    model: Qwen3VLForConditionalGeneration, inputs: list[LayerInputs], prune: LayerPruner
) -> None:
    """Prune every decoder layer in order (see the module docstring)."""
    text = model.model.language_model
    for index, layer in enumerate(text.layers):
        observers, finish = prune(index, layer)
        handles = [module.register_forward_pre_hook(o, with_kwargs=True) for module, o in observers.items()]
        try:
            if observers:
                for request in inputs:
                    run_layer(model, index, request)
        finally:
            for handle in handles:
                handle.remove()
        finish()
        if index + 1 < len(text.layers):
            for request in inputs:
                request.hidden = run_layer(model, index, request)
