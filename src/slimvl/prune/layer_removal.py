"""Whole decoder layers removed by ShortGPT's block influence (Men et al., 2024): a layer whose output
hidden states point where its input did (1 - cosine similarity near 0) changes the residual stream
least, and the ones of least influence over the calibration tokens leave.

Layers that DeepStack feeds (visual features are added after each of the first
``len(deepstack_visual_indexes)`` layers) stay: without them those features would have nowhere to go.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimvl.models.hooks import InputObserver


class BlockInfluence:
    """Mean over calibration tokens of 1 - cos(input, output) of each decoder layer, seen as the inputs
    of consecutive layers (and of the final norm) in one forward pass."""

    def __init__(self, layers: int) -> None:
        self.sums = torch.zeros(layers, dtype=torch.float64)
        self.counts = torch.zeros(layers, dtype=torch.float64)
        self._previous: tuple[int, torch.Tensor] | None = None

    def observers(self, text_model: nn.Module) -> dict[nn.Module, InputObserver]:
        """Observers for the calibration runner: each decoder layer's input and the final norm's."""
        found = {layer: self._observer(i) for i, layer in enumerate(text_model.layers)}
        found[text_model.norm] = self._observer(len(text_model.layers))
        return found

    def _observer(self, index: int) -> InputObserver:
        def observe(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = (args[0] if args else kwargs["hidden_states"]).detach()
            if self._previous is not None and self._previous[0] == index - 1:
                before = self._previous[1]
                if before.shape == hidden.shape:
                    similarity = F.cosine_similarity(before.double(), hidden.double(), dim=-1).flatten()
                    self.sums[index - 1] += (1 - similarity).sum()
                    self.counts[index - 1] += similarity.numel()
            self._previous = (index, hidden)

        return observe

    def scores(self) -> torch.Tensor:
        """(layers,) block influence; ValueError if a layer was never seen with its successor."""
        if bool((self.counts == 0).any()):
            unseen = (self.counts == 0).nonzero().flatten().tolist()
            raise ValueError(f"block influence: decoder layers {unseen} never ran on a calibration request")
        return self.sums / self.counts


def layers_to_remove(influence: torch.Tensor, count: int, fed_by_deepstack: int) -> list[int]:
    """The `count` layers of least influence among those DeepStack does not feed, ascending.

    Raises ValueError naming `layers_removed` when fewer layers may go."""
    candidates = torch.arange(fed_by_deepstack, len(influence))
    if count > len(candidates):
        raise ValueError(
            f"PruningConfig.layers_removed: got {count}, allowed: at most {len(candidates)} "
            f"(this decoder has {len(influence)} layers; DeepStack feeds the first {fed_by_deepstack})"
        )
    order = influence[candidates].argsort(stable=True)
    return sorted(candidates[order[:count]].tolist())


def remove_layers(text_model: nn.Module, removed: list[int]) -> None:
    """Drop decoder layers `removed` (indices in the current list) and renumber the rest's cache slots."""
    gone = set(removed)
    kept = [layer for i, layer in enumerate(text_model.layers) if i not in gone]
    for index, layer in enumerate(kept):
        layer.self_attn.layer_idx = index
    text_model.layers = nn.ModuleList(kept)


def deepstack_fed_layers(model: nn.Module) -> int:
    """How many of the first decoder layers DeepStack adds visual features after."""
    return len(model.config.vision_config.deepstack_visual_indexes)
