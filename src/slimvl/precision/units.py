"""The units a precision plan assigns formats to, and what each format costs them in bytes.

A unit is one or more linears that always share a format: per decoder layer its q/k projections, its v
projection (llama.cpp's heuristic treats it apart), o, the MLP's gate/up (they read one input) and down;
per vision block its attention and its MLP; each merger; and the token embedding with ``lm_head`` (one
unit when tied: one table serves both)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from slimvl.precision import int4_math

# formats from fewest to most bits; fp16 and bf16 are the same size
FORMAT_BITS = {"int4": 4, "int8": 8, "fp16": 16, "bf16": 16, "fp32": 32}
EMBEDDING = "model.language_model.embed_tokens"
LM_HEAD = "lm_head"
_DECODER = re.compile(r"^model\.language_model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj$")
_VISION = re.compile(r"^model\.visual\.blocks\.(\d+)\.(attn|mlp)\.\w+$")
_MERGER = re.compile(r"^model\.visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc[12]$")
_DECODER_ROLE = {"q": "attn_qk", "k": "attn_qk", "v": "attn_v", "o": "attn_o", "gate": "mlp_gate_up"}
_DECODER_ROLE.update(up="mlp_gate_up", down="mlp_down")


@dataclass(frozen=True)
class Unit:
    name: str
    role: str  # attn_qk, attn_v, attn_o, mlp_gate_up, mlp_down, vision_attn, vision_mlp, merger, table
    layer: int | None  # decoder or vision layer index
    modules: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]  # (out, in) of each module (a table: (vocab, dim))
    tied: bool = False  # the table unit: lm_head reads the embedding's table

    @property
    def params(self) -> int:
        return sum(n * k for n, k in self.shapes)

    def allows(self, fmt: str) -> bool:
        return fmt != "int4" or all(int4_math.supports(shape) for shape in self.shapes)

    def nbytes(self, fmt: str) -> int:
        """Stored bytes in ``fmt`` (codes and scales; a tied table once)."""
        if fmt == "int4":
            return sum(n * k // 2 + n * (k // int4_math.GROUP) + 8 * n for n, k in self.shapes)
        if fmt == "int8":
            return sum(n * k + 4 * n for n, k in self.shapes)
        return self.params * FORMAT_BITS[fmt] // 8


def model_units(model: nn.Module) -> list[Unit]:
    """The units of a Qwen3-VL model, decoder first, in layer order."""
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    groups: dict[tuple, list[str]] = {}
    for name in linears:
        if found := _DECODER.match(name):
            key = ("decoder", int(found[1]), _DECODER_ROLE[found[3]])
        elif found := _VISION.match(name):
            key = ("vision", int(found[1]), f"vision_{found[2]}")
        elif found := _MERGER.match(name):
            key = ("merger", found[1], "merger")
        else:
            continue
        groups.setdefault(key, []).append(name)
    units = []
    for (part, index, role), names in groups.items():
        shapes = tuple((linears[n].out_features, linears[n].in_features) for n in names)
        if part == "merger":
            units.append(Unit(f"visual.{index}", role, None, tuple(names), shapes))
        else:
            units.append(Unit(f"{part}.{index}.{role}", role, index, tuple(names), shapes))
    embedding, head = model.get_submodule(EMBEDDING), model.get_submodule(LM_HEAD)
    if isinstance(embedding, nn.Embedding) and isinstance(head, nn.Linear):
        shape = tuple(embedding.weight.shape)
        if head.weight.data_ptr() == embedding.weight.data_ptr():
            units.append(
                Unit("embed_tokens+lm_head", "table", None, (EMBEDDING, LM_HEAD), (shape,), tied=True)
            )
        else:
            units.append(Unit("embed_tokens", "table", None, (EMBEDDING,), (shape,)))
            units.append(Unit("lm_head", "lm_head", None, (LM_HEAD,), (shape,)))
    order = {
        "decoder": 0,
        "vision": 1,
        "visual": 2,
        "embed_tokens+lm_head": 3,
        "embed_tokens": 3,
        "lm_head": 4,
    }
    return sorted(units, key=lambda u: (order[u.name.split(".")[0]], u.layer or 0))
