"""Which visual tokens survive: pure selection over one image's tokens, its per-image dispatch, and the
keep mask of a whole sequence.

Every function returns a boolean keep mask over the image's tokens in their original (raster) order;
the kept tokens are never reordered.
"""

from __future__ import annotations

import math

import torch

from slimvl.config import SparsificationConfig
from slimvl.models.steps import DecoderSequence


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the `k` highest of `scores` (n,); ties go to the earlier token."""
    n = scores.shape[0]
    mask = torch.zeros(n, dtype=torch.bool)
    if k >= n:
        return mask.fill_(True)
    # A stable descending sort makes ties deterministic (earlier index first).
    order = torch.sort(scores.detach().float().cpu(), descending=True, stable=True).indices
    mask[order[:k]] = True
    return mask


def random_mask(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Keep `k` of `n` tokens drawn uniformly with `generator`."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:k]] = True
    return mask


def _spread(count: int, total: int) -> torch.Tensor:
    """`count` distinct indices in [0, total), evenly spread (centred in equal strips)."""
    return ((torch.arange(count, dtype=torch.float64) + 0.5) * total / count).floor().long()


def grid_shape(rows: int, cols: int, k: int) -> tuple[int, int]:
    """Rows and columns of a regular sub-grid of a `rows` x `cols` grid with about `k` points."""
    r = min(rows, max(1, round(math.sqrt(k * rows / cols))))
    c = min(cols, max(1, round(k / r)))
    return r, c


def grid_mask(coords: torch.Tensor, k: int) -> torch.Tensor:
    """Keep `k` tokens on a fixed spatial grid; `coords` (n, 2) holds each token's (row, col).

    Evenly strided rows and columns give about `k` grid points; the points are then thinned evenly
    (too many) or completed with evenly spread off-grid tokens (too few), so exactly `k` survive.
    """
    n = coords.shape[0]
    if k >= n:
        return torch.ones(n, dtype=torch.bool)
    rows, cols = int(coords[:, 0].max()) + 1, int(coords[:, 1].max()) + 1
    r, c = grid_shape(rows, cols, k)
    on_grid = torch.isin(coords[:, 0], _spread(r, rows)) & torch.isin(coords[:, 1], _spread(c, cols))
    chosen = on_grid.nonzero().flatten()
    if len(chosen) > k:
        chosen = chosen[_spread(k, len(chosen))]
    elif len(chosen) < k:
        rest = (~on_grid).nonzero().flatten()
        chosen = torch.cat([chosen, rest[_spread(k - len(chosen), len(rest))]])
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    return mask


def image_coords(position_ids: torch.Tensor) -> torch.Tensor:
    """(row, col) of each token of one image on its merged grid, from its MRoPE (t, h, w) positions (3, n).

    Qwen3-VL gives an image's tokens h/w positions `start + row` / `start + col`, so the grid needs no
    extra input and survives `DecoderSequence.keep` (positions are never renumbered).
    """
    hw = position_ids[1:].T
    return hw - hw.min(dim=0).values


def select_visual(
    config: SparsificationConfig,
    tokens_per_image: list[int],
    visual_positions: torch.Tensor | None,
    scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Keep mask (Nv,) over all visual tokens, `config.tokens_to_keep(n)` of each image.

    `visual_positions` (3, Nv) are the visual tokens' MRoPE positions, needed by `grid`; `scores` (Nv,)
    are needed by `top_k`. `random` draws from a generator seeded with `config.seed` at each call, so one
    request always keeps the same tokens.
    """
    generator = torch.Generator().manual_seed(config.seed)
    masks, start = [], 0
    for n in tokens_per_image:
        k = config.tokens_to_keep(n)
        if config.sparsity_method == "top_k":
            if scores is None:
                raise ValueError("select_visual: sparsity_method 'top_k' needs scores")
            masks.append(top_k_mask(scores[start : start + n], k))
        elif config.sparsity_method == "random":
            masks.append(random_mask(n, k, generator))
        else:
            if visual_positions is None:
                raise ValueError("select_visual: sparsity_method 'grid' needs the visual positions")
            masks.append(grid_mask(image_coords(visual_positions[:, start : start + n]), k))
        start += n
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)


def sequence_keep_mask(
    config: SparsificationConfig, seq: DecoderSequence, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep mask (L,) over `seq`: every text position, and the visual tokens `select_visual` keeps."""
    visual = seq.visual_mask[0]
    mask = torch.ones(seq.length, dtype=torch.bool)
    mask[visual] = select_visual(config, seq.tokens_per_image, seq.position_ids[:, 0, visual], scores)
    return mask
