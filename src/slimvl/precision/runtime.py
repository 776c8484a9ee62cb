"""The controller at work: request hooks that ask it for each request's mode and apply it — threads and
the image size through `RequestMode`, the share of visual tokens kept after vision (text-guided ranking,
on top of whatever the recipe's own sparsifier kept) — and delegate everything else to the hooks of
the sections before it."""

from __future__ import annotations

import time

from slimvl.config import SparsificationConfig
from slimvl.models.hooks import RequestMode, WrappingHooks
from slimvl.models.loader import LoadedModel
from slimvl.models.steps import DecoderSequence
from slimvl.precision.controller import Controller, ControllerPolicy, ModelCosts, RequestNeeds
from slimvl.precision.machine_state import StateSource, read_machine_state, sample_load_every
from slimvl.sparsify.sparsifier import TokenSparsifier

# the controller's view of other processes' CPU load: the last completed window of this many seconds
LOAD_WINDOW_S = 0.5
_VISION_BYTES_PER_PATCH_PER_DIM = 24  # activation bytes held per patch and hidden unit while encoding


def model_costs(loaded: LoadedModel, weight_bytes: int) -> ModelCosts:
    """The model facts the controller's memory estimate needs."""
    vision = loaded.model.config.vision_config
    # keys and values in fp32, each layer with its own key/value heads (structured pruning may differ)
    kv_width = sum(layer.self_attn.k_proj.out_features for layer in loaded.model.model.language_model.layers)
    processor = loaded.preprocessor.image_processor
    side = processor.patch_size * processor.merge_size
    return ModelCosts(
        weight_bytes=weight_bytes,
        kv_bytes_per_token=2 * 4 * kv_width,
        pixels_per_visual_token=side * side,
        vision_bytes_per_patch=_VISION_BYTES_PER_PATCH_PER_DIM * vision.hidden_size,
        default_max_pixels=processor.size["longest_edge"],
        min_pixels=processor.size["shortest_edge"],
    )


class ControlledHooks(WrappingHooks):
    """``inner``'s hooks, run in the mode `controller` picks for each request."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self._keep = 1.0

    def begin_request(self, images: list, prompt: str, max_new_tokens: int) -> RequestMode:
        start = time.perf_counter()
        needs = RequestNeeds(
            images=len(images),
            image_pixels=sum(im.width * im.height for im in images),
            prompt_chars=len(prompt),
            max_new_tokens=max_new_tokens,
        )
        mode = self.controller.decide(needs)
        self._keep = mode.visual_keep
        record = mode.to_dict()
        record["decision_ms"] = round((time.perf_counter() - start) * 1e3, 4)
        return RequestMode(threads=mode.threads, max_pixels=mode.max_pixels, record=record)

    def after_vision(self, seq: DecoderSequence) -> DecoderSequence:
        seq = self.inner.after_vision(seq)
        if self._keep >= 1.0 or not bool(seq.visual_mask.any()):
            return seq
        config = SparsificationConfig(
            sparsity_ratio=1.0 - self._keep,
            sparsity_method="top_k",
            min_tokens_per_image=1,
            max_tokens_per_image=1 << 30,
        )
        return TokenSparsifier(config).after_vision(seq)


def controlled(
    loaded: LoadedModel,
    weight_bytes: int,
    headroom_mb: int,
    state_source: StateSource = read_machine_state,
    threads: int | None = None,
) -> ControlledHooks:
    policy = ControllerPolicy(memory_headroom_bytes=headroom_mb * 2**20)
    controller = Controller(model_costs(loaded, weight_bytes), policy, state_source, threads)
    if state_source is read_machine_state:
        sample_load_every(LOAD_WINDOW_S)
    return ControlledHooks(controller)
