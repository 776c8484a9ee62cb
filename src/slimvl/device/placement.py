"""Where each part of the model runs: as many decoder layers on the GPU as its free memory holds (the
last ones, as llama.cpp's `-ngl` offloads), the vision tower too if it then still fits, the rest on the
CPU. The embedding lookup and the head stay on the CPU, so a token's activations cross the bus twice
(into the first GPU layer, out of the last) however many layers the GPU holds.

Pure arithmetic on byte counts (`PlacementNeeds`), so that it can be checked for any simulated device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from slimvl.device.spec import CUDA_CONTEXT_BYTES, DeviceError, DeviceSpec

MIB = 1024**2


@dataclass(frozen=True)
class PlacementNeeds:
    """Bytes each part needs on the GPU, in the format it would run in there."""

    layer_bytes: tuple[int, ...]  # each decoder layer's weights
    kv_bytes_per_layer: tuple[int, ...]  # each layer's KV cache at the planned context
    vision_bytes: int  # the vision tower's weights and its activations for one image
    workspace_bytes: int  # the largest transient: a widened weight plus a prefill's activations


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda:N"
    gpu_layers: tuple[int, ...]  # decoder layer indices on the GPU
    vision_on_gpu: bool
    gpu_bytes: int  # what the placed parts need there
    budget_bytes: int  # the device's free memory less the CUDA context and the workspace
    layers: int  # decoder layers in all
    reason: str

    @property
    def on_gpu(self) -> bool:
        return bool(self.gpu_layers) or self.vision_on_gpu

    def describe(self) -> str:
        if not self.on_gpu:
            return f"all on the CPU ({self.reason})"
        span = f"layers {self.gpu_layers[0]}-{self.gpu_layers[-1]}" if self.gpu_layers else "no layers"
        return (
            f"{len(self.gpu_layers)} of {self.layers} decoder layers on {self.device} ({span}), vision tower "
            f"on {'the GPU' if self.vision_on_gpu else 'the CPU'}: {self.gpu_bytes / MIB:,.0f} MiB of "
            f"{self.budget_bytes / MIB:,.0f} MiB usable ({self.reason})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_placement(layers: int, gpu_layers: int | None = None) -> Placement:
    """Everything on the CPU (a DeviceError where GPU layers are asked for)."""
    if gpu_layers:
        raise DeviceError("--gpu-layers: needs a GPU (--device cuda or auto with one present)")
    return Placement("cpu", (), False, 0, 0, layers, "device cpu")


def _layer_cost(needs: PlacementNeeds, index: int) -> int:
    return needs.layer_bytes[index] + needs.kv_bytes_per_layer[index]


def plan_placement(
    needs: PlacementNeeds,
    device: DeviceSpec,
    gpu_layers: int | None = None,
    reserve_bytes: int = CUDA_CONTEXT_BYTES,
) -> Placement:
    """The placement on `device`: `gpu_layers` decoder layers if given (a DeviceError if they do not
    fit), else as many as fit; then the vision tower if what is left holds it."""
    count = len(needs.layer_bytes)
    if device.kind == "cpu":
        return cpu_placement(count, gpu_layers)
    if gpu_layers is not None and not 0 <= gpu_layers <= count:
        raise DeviceError(f"--gpu-layers: got {gpu_layers}, allowed: 0 to {count} (the decoder's layers)")
    budget = device.free_bytes - reserve_bytes - needs.workspace_bytes
    fitting, used = 0, 0
    while fitting < count and used + _layer_cost(needs, count - 1 - fitting) <= budget:
        used += _layer_cost(needs, count - 1 - fitting)
        fitting += 1
    name = f"cuda:{device.index}"
    if gpu_layers is not None and gpu_layers > fitting:
        wanted = sum(_layer_cost(needs, i) for i in range(count - gpu_layers, count))
        raise DeviceError(
            f"--gpu-layers {gpu_layers}: they need {wanted / MIB:,.0f} MiB on {name}, which has "
            f"{max(budget, 0) / MIB:,.0f} MiB usable: at most {fitting} fit"
        )
    placed = fitting if gpu_layers is None else gpu_layers
    used = sum(_layer_cost(needs, i) for i in range(count - placed, count))
    vision = placed == count and used + needs.vision_bytes <= budget
    reason = "asked for" if gpu_layers is not None else ("all fit" if placed == count else "as many as fit")
    return Placement(
        name,
        tuple(range(count - placed, count)),
        vision,
        used + (needs.vision_bytes if vision else 0),
        max(budget, 0),
        count,
        reason,
    )
