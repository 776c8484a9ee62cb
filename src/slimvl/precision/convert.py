"""Put one unit of a model into a format: the modules that store it that way."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from slimvl.precision.float_linear import DTYPES, FloatLinear, choose_compute
from slimvl.precision.int4_modules import Int4Embedding, Int4Linear, TiedInt4LMHead, choose_prefill_kernel
from slimvl.precision.units import EMBEDDING, LM_HEAD, Unit
from slimvl.quant.embedding import Int8Embedding, TiedInt8LMHead
from slimvl.quant.linear import Int8Linear


def swap_in(model: nn.Module, unit: Unit, fmt: str) -> Callable[[], None]:
    """Replace ``unit``'s modules by ``fmt`` ones computing its numerics (int8 through the plain
    ``dequant`` kernel: the same function as the fast ones up to fp32 rounding); returns the undo."""
    originals = {name: model.get_submodule(name) for name in unit.modules}
    if unit.role == "table":
        embedding = originals[EMBEDDING]
        if fmt == "int4":
            table = Int4Embedding.from_embedding(embedding)
            head = (
                TiedInt4LMHead(table, "avx2")
                if unit.tied
                else Int4Linear.from_linear(originals[LM_HEAD], "avx2")
            )
        elif fmt == "int8":
            table = Int8Embedding.from_embedding(embedding)
            head = (
                TiedInt8LMHead(table, "dequant")
                if unit.tied
                else Int8Linear.from_linear(originals[LM_HEAD], "weight_only", "dequant")
            )
        else:
            table = nn.Embedding.from_pretrained(embedding.weight.detach().to(DTYPES[fmt]).float())
            head = nn.Linear(embedding.embedding_dim, embedding.num_embeddings, bias=False)
            head.weight = table.weight
        model.set_submodule(EMBEDDING, table)
        if unit.tied:
            model.set_submodule(LM_HEAD, head)
    else:
        for name, linear in originals.items():
            model.set_submodule(name, _linear(linear, fmt))

    def undo() -> None:
        for name, module in originals.items():
            model.set_submodule(name, module)

    return undo


def _linear(linear: nn.Linear, fmt: str) -> nn.Module:
    if fmt == "int4":
        return Int4Linear.from_linear(linear, "avx2")
    if fmt == "int8":
        return Int8Linear.from_linear(linear, "dynamic", "dequant")
    return FloatLinear.from_linear(linear, fmt)


def convert(model: nn.Module, unit: Unit, fmt: str, timings: dict) -> dict[str, dict]:
    """Store ``unit`` in int4 or a float format for good (int8 is the int8 quantizer's: see `section`),
    with the kernels measured fastest here; returns each module's plan entry."""
    entries = {}
    if unit.role == "table":
        embedding = model.get_submodule(EMBEDDING)
        shape = tuple(embedding.weight.shape)
        kernel = _prefill_kernel(shape, timings)
        table = Int4Embedding.from_embedding(embedding)
        model.set_submodule(EMBEDDING, table)
        entries[EMBEDDING] = {
            "kind": "embedding",
            "format": "int4",
            "shape": list(shape),
            "dtype": str(table.dtype),
        }
        if unit.tied:
            model.set_submodule(LM_HEAD, TiedInt4LMHead(table, kernel))
            entries[LM_HEAD] = {
                "kind": "lm_head",
                "format": "int4",
                "shape": list(shape),
                "prefill_kernel": kernel,
            }
        return entries
    for name in unit.modules:
        linear = model.get_submodule(name)
        shape = (linear.out_features, linear.in_features)
        entry = {"kind": "linear", "format": fmt, "shape": list(shape), "bias": linear.bias is not None}
        if fmt == "int4":
            entry["prefill_kernel"] = _prefill_kernel(shape, timings)
            module = Int4Linear.from_linear(linear, entry["prefill_kernel"])
        else:
            compute, measured = choose_compute(fmt, shape)
            if measured:
                timings[f"{fmt} {shape[0]}x{shape[1]}"] = measured
            entry["compute"] = compute
            module = FloatLinear.from_linear(linear, fmt, compute)
        model.set_submodule(name, module)
        entries[name] = entry
    return entries


def _prefill_kernel(shape: tuple[int, int], timings: dict) -> str:
    kernel, measured = choose_prefill_kernel(shape)
    if measured:
        timings[f"int4 {shape[0]}x{shape[1]}"] = measured
    return kernel


def empty_module(entry: dict) -> nn.Module:
    """The empty (meta) module a plan entry describes, for a linear (a table is built by `section`)."""
    n, k = entry["shape"]
    if entry["format"] == "int4":
        return Int4Linear(k, n, bias=entry["bias"], prefill_kernel=entry["prefill_kernel"], device="meta")
    return FloatLinear(k, n, bias=entry["bias"], fmt=entry["format"], compute=entry["compute"], device="meta")
