"""What a bench row is (slimvl with a recipe, or a peer), and how its worker process is launched.

Row kinds and where they run:
- `slimvl`: `slimvl.load(model, recipe, threads)` then `.generate(..., ignore_eos=True)`, in
  `python -m slimvl.bench.worker`.
- `hf`: transformers' `generate` on the same weights (`load_model`), optionally torchao int8, same worker.
- `openvino`: OpenVINO GenAI's `VLMPipeline` on an optimum-intel export, in `openvino_worker.py` run by
  the interpreter of its own virtualenv.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slimvl.api import missing_optimizations
from slimvl.bench import ov_export
from slimvl.config import Recipe
from slimvl.models.loader import BUILTIN_PREFIX


@dataclass(frozen=True)
class Peer:
    kind: str
    description: str
    dtype: str = "fp32"
    quantize: str | None = None
    weight_format: str | None = None
    pruning_percent: int = 0  # OpenVINO GenAI's own visual token pruning (GenerationConfig.pruning_ratio)
    # OpenVINO's INFERENCE_PRECISION_HINT; None: its default, bf16 activations on a CPU with native bf16
    # (AVX512_BF16 or AMX, as these machines have), f32 on one without (the AVX2 laptop).
    inference_precision: str | None = None


PEERS: dict[str, Peer] = {
    "hf-fp32": Peer("hf", "transformers generate, eager, fp32", dtype="fp32"),
    "hf-bf16": Peer("hf", "transformers generate, eager, bf16", dtype="bf16"),
    "torchao-int8": Peer(
        "hf",
        "transformers generate, bf16, torchao Int8WeightOnlyConfig on the language model, eager (no torch.compile)",
        dtype="bf16",
        quantize="torchao-int8",
    ),
    "openvino-int8": Peer(
        "openvino", "OpenVINO GenAI VLMPipeline, optimum-intel int8 export", weight_format="int8"
    ),
    "openvino-int8-f32": Peer(
        "openvino",
        "OpenVINO GenAI VLMPipeline, optimum-intel int8 export, activations in f32 as on a CPU without native bf16",
        weight_format="int8",
        inference_precision="f32",
    ),
    "openvino-int8-prune60": Peer(
        "openvino",
        "OpenVINO GenAI VLMPipeline, optimum-intel int8 export, its visual token pruning at 60% (CDPruner)",
        weight_format="int8",
        pruning_percent=60,
    ),
    "openvino-int4": Peer(
        "openvino", "OpenVINO GenAI VLMPipeline, optimum-intel int4 export", weight_format="int4"
    ),
}
PEER_NAMES: tuple[str, ...] = tuple(PEERS)


@dataclass
class RowSpec:
    name: str
    kind: str  # "slimvl", "hf" or "openvino"
    model: str
    description: str = ""
    dtype: str = "fp32"
    recipe: dict[str, Any] | None = None  # slimvl rows: Recipe.to_dict()
    quantize: str | None = None
    weight_format: str | None = None
    pruning_percent: int = 0
    inference_precision: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_peers(text: str) -> list[str]:
    """A comma-separated list of peer names, checked against `PEER_NAMES`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer {', '.join(unknown)}: allowed {', '.join(PEER_NAMES)}")
    return names


def _model_ref(model: str) -> str:
    """Builtin references as given; a directory as an absolute path (workers may start elsewhere)."""
    return model if model.startswith(BUILTIN_PREFIX) else str(Path(model).resolve())


def slimvl_row(model: str, recipe: Recipe, name: str | None = None) -> RowSpec:
    return RowSpec(
        name=name or f"slimvl:{recipe.name}",
        kind="slimvl",
        model=_model_ref(model),
        description=f"slimvl, recipe {recipe.name}",
        recipe=recipe.to_dict(),
    )


def peer_row(model: str, peer: str) -> RowSpec:
    info = PEERS[peer]
    return RowSpec(
        name=peer,
        kind=info.kind,
        model=_model_ref(model),
        description=info.description,
        dtype=info.dtype,
        quantize=info.quantize,
        weight_format=info.weight_format,
        pruning_percent=info.pruning_percent,
        inference_precision=info.inference_precision,
    )


def check_unique_names(rows: list[RowSpec]) -> None:
    seen: set[str] = set()
    for row in rows:
        if row.name in seen:
            raise ValueError(f"two bench rows are named {row.name!r}: give the recipes different names")
        seen.add(row.name)


def not_built(row: RowSpec) -> list[str]:
    """The optimizations a slimvl row's recipe asks for that this version does not have."""
    if row.kind != "slimvl" or row.recipe is None:
        return []
    return missing_optimizations(Recipe.from_dict(row.recipe))


def not_runnable_reason(row: RowSpec) -> str | None:
    """Why a row cannot run on this installation (checked before any process starts), or None."""
    if row.quantize == "torchao-int8" and importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install torchao)"
    if row.kind == "openvino":
        return ov_export.not_runnable_reason()
    return None


def worker_argv(row: RowSpec, worker_spec: dict[str, Any]) -> list[str]:
    """The command of the row's worker process; an openvino row is exported (cached) here first."""
    if row.kind == "openvino":
        model_dir, export_s = ov_export.export(row.model, row.weight_format or "int8")
        worker_spec = {**worker_spec, "model_dir": str(model_dir), "export_s": export_s}
        return ov_export.worker_argv(json.dumps(worker_spec))
    return [sys.executable, "-m", "slimvl.bench.worker", json.dumps(worker_spec)]
