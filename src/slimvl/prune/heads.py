"""Structured pruning of attention heads in the decoder, by whole grouped-query groups: a key/value head
leaves together with the query heads that read it, so every layer keeps transformers' one
``num_key_value_groups`` and its key/value cache shrinks with the projections (q, k, v rows; o columns).

A group is scored like a channel (Wanda-sp / FLAP): the sum over the group's input columns of the
output projection of column norm times the L2 norm of that input over the calibration tokens; with
`magnitude`, the column norms alone. Each layer keeps `kept_width(groups, ratio)` groups, its highest
scored, in their original order.
"""

from __future__ import annotations

import torch
from torch import nn

from slimvl.prune.structured import keep_columns, keep_rows, linear_like

DECODER_ATTENTION = "Qwen3VLTextAttention"


def kv_groups(attn: nn.Module) -> int:
    """Key/value heads (= query-head groups) `attn` has now."""
    return attn.k_proj.out_features // attn.head_dim


def group_scores(attn: nn.Module, input_sq_norms: torch.Tensor | None) -> torch.Tensor:
    """(kv_groups,) importance of each group (see the module docstring); None: column norms alone."""
    scores = attn.o_proj.weight.detach().float().norm(dim=0)
    if input_sq_norms is not None:
        scores = scores * input_sq_norms.float().sqrt()
    return scores.view(kv_groups(attn), -1).sum(dim=1)


def keep_groups(attn: nn.Module, kept: torch.Tensor) -> None:
    """Shrink `attn` in place to the groups `kept` (sorted indices)."""
    kv_rows = _rows(kept, attn.head_dim)
    q_rows = _rows(_query_heads(kept, attn.num_key_value_groups), attn.head_dim)
    attn.q_proj = keep_rows(attn.q_proj, q_rows)
    attn.k_proj = keep_rows(attn.k_proj, kv_rows)
    attn.v_proj = keep_rows(attn.v_proj, kv_rows)
    attn.o_proj = keep_columns(attn.o_proj, q_rows)


def resize_groups(attn: nn.Module, groups: int) -> None:
    """Give `attn` (built on the meta device) projections of `groups` groups, for stored weights to fill."""
    kv = groups * attn.head_dim
    q = kv * attn.num_key_value_groups
    for name, rows in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
        old = getattr(attn, name)
        setattr(attn, name, linear_like(old, old.in_features, rows))
    attn.o_proj = linear_like(attn.o_proj, q, attn.o_proj.out_features)


def _query_heads(groups: torch.Tensor, per_group: int) -> torch.Tensor:
    """The query heads of `groups`: group g holds heads g*per_group .. g*per_group+per_group-1 (as
    transformers' repeat_kv pairs them)."""
    return (groups.unsqueeze(1) * per_group + torch.arange(per_group)).flatten()


def _rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads.unsqueeze(1) * head_dim + torch.arange(head_dim)).flatten()
