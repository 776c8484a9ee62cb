"""Linears that read the same input run as one GEMM: a decoder layer's q/k/v projections, and its MLP's
gate/up projections.

One kernel call per group instead of three (or two): each int8 call has a fixed cost (quantizing and
packing the input, a parallel region: ~20 us at one token here, x 84 calls per 2B decode step), and one
wide weight streams from memory better than several narrow ones. Exact: the input is quantized once
either way (per tensor, or per row for several rows) and each output channel is its own dot product, so
the fused output's columns are the separate outputs bit for bit.

The member modules stay where they are, with their names, plans and `state_dict`; each forwards to its
group, which computes the fused output once per input tensor and hands every member its columns.
"""

from __future__ import annotations

import torch
from torch import nn

from slimvl.quant.linear import Int8Linear, check_kernel

SHARED_INPUT_GROUPS = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("mlp.gate_proj", "mlp.up_proj"),
)


class SharedInputGroup:
    """Int8 linears of one input, computed by one `Int8Linear` over their stacked weights."""

    def __init__(self, members: list[Int8Linear]) -> None:
        first = members[0]
        fused = Int8Linear(
            first.in_features,
            sum(m.out_features for m in members),
            bias=first.bias is not None,
            mode=first.mode,
            kernel=first.kernel,
            reduce_range=first.reduce_range,
            device="meta",
        )
        fused.qweight = torch.cat([m.qweight for m in members])
        fused.w_scale = torch.cat([m.w_scale for m in members])
        if first.bias is not None:
            fused.bias = torch.cat([m.bias for m in members])
        if first.mode == "static":
            fused.act_scale, fused.act_zero_point = first.act_scale.clone(), first.act_zero_point.clone()
        fused.prepare()
        self.fused = fused
        self.members = members
        self._columns: dict[int, tuple[int, int]] = {}
        start = 0
        for member in members:
            self._columns[id(member)] = (start, start + member.out_features)
            start += member.out_features
            member._buffers["qweight"] = None  # held once, stacked in `fused`
            member._group = self
        self._input: torch.Tensor | None = None
        self._output: torch.Tensor | None = None
        self._served: set[int] = set()

    def output(self, member: Int8Linear, x: torch.Tensor) -> torch.Tensor:
        """`member`'s output for `x`: its columns of the fused output, computed on the first member's call
        for this input (and again if a member asks twice, or for another input)."""
        key = id(member)
        if x is not self._input or key in self._served:
            self._input, self._output, self._served = x, self.fused(x), set()
        start, stop = self._columns[key]
        out = self._output[..., start:stop]
        self._served.add(key)
        if len(self._served) == len(self.members):  # every member has its part: hold nothing
            self._input = self._output = None
        return out

    def weight_rows(self, member: Int8Linear) -> torch.Tensor:
        """`member`'s int8 weight, taken back out of the stacked one."""
        start, stop = self._columns[id(member)]
        return self.fused.own_int8_weight()[start:stop].clone()

    def dissolve(self) -> None:
        """Give every member its own weight back and end the group (before loading new weights)."""
        stacked = self.fused.own_int8_weight()
        for member in self.members:
            start, stop = self._columns[id(member)]
            member._buffers["qweight"] = stacked[start:stop].clone()
            member._group = None
            member._state = None


def _fusable(members: list[nn.Module]) -> bool:
    if not all(isinstance(m, Int8Linear) and m._group is None and m._state is None for m in members):
        return False
    first = members[0]
    same = all(
        (m.in_features, m.mode, m.kernel, m.reduce_range, m.bias is None)
        == (first.in_features, first.mode, first.kernel, first.reduce_range, first.bias is None)
        and m.smooth is None
        and m.qweight is not None
        for m in members
    )
    if not same:
        return False
    if first.mode == "static" and not all(
        torch.equal(m.act_scale, first.act_scale) and torch.equal(m.act_zero_point, first.act_zero_point)
        for m in members
    ):
        return False
    try:
        check_kernel(
            first.kernel,
            (sum(m.out_features for m in members), first.in_features),
            first.mode == "weight_only",
        )
    except ValueError:
        return False
    return True


def fuse_shared_inputs(model: nn.Module) -> int:
    """Group the int8 linears of each decoder layer that read one input (`SHARED_INPUT_GROUPS`), where
    they share their kernel, mode and activation quantization; before their weights are packed.
    Returns how many groups were made."""
    groups = 0
    for layer in model.modules():
        for paths in SHARED_INPUT_GROUPS:
            try:
                members = [layer.get_submodule(path) for path in paths]
            except AttributeError:
                continue
            if _fusable(members):
                SharedInputGroup(members)
                groups += 1
    return groups


def run_shapes(shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """The (N, K) each named linear will run at: a whole `SHARED_INPUT_GROUPS` group present in
    ``shapes`` runs as one stacked GEMM, so its members are timed (and get one kernel, which fusing
    needs) at the stacked shape; any other linear at its own."""
    out = dict(shapes)
    for name in shapes:
        for paths in SHARED_INPUT_GROUPS:
            if not name.endswith("." + paths[0]):
                continue
            prefix = name[: -len(paths[0])]
            members = [prefix + path for path in paths]
            if all(m in shapes for m in members) and len({shapes[m][1] for m in members}) == 1:
                stacked = (sum(shapes[m][0] for m in members), shapes[name][1])
                out.update(dict.fromkeys(members, stacked))
    return out
