"""Which device a model runs on: what the machine has, and what `--device cpu|cuda|auto` chooses.

A `DeviceSpec` is what the placement planner and the precision rules read (name, compute capability,
memory), so that both can be tested with a simulated GPU on a machine without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

DEVICE_CHOICES = ("cpu", "cuda", "auto")
# Beside the weights the planner places: the CUDA context and PyTorch's own allocations on the device.
CUDA_CONTEXT_BYTES = 400 * 1024**2


class DeviceError(ValueError):
    """A device request this machine cannot honour; the message is one line."""


@dataclass(frozen=True)
class DeviceSpec:
    kind: str  # "cpu" or "cuda"
    name: str
    capability: tuple[int, int] | None = None  # CUDA compute capability (major, minor)
    total_bytes: int = 0
    free_bytes: int = 0
    index: int = 0

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cpu") if self.kind == "cpu" else torch.device("cuda", self.index)

    @property
    def sm(self) -> str:
        return "-" if self.capability is None else f"sm_{self.capability[0]}{self.capability[1]}"

    def describe(self) -> str:
        if self.kind == "cpu":
            return "cpu"
        return (
            f"cuda:{self.index} ({self.name}, {self.sm}, {self.free_bytes / 1024**3:.1f} of "
            f"{self.total_bytes / 1024**3:.1f} GiB free)"
        )


CPU = DeviceSpec("cpu", "cpu")


def parse_simulated(text: str) -> DeviceSpec:
    """A simulated GPU from "MAJOR.MINOR:MEMORY", e.g. "6.1:2GB" or "9.0:80GiB" (memory all free)."""
    match = re.fullmatch(r"(\d+)\.(\d+):(\d+(?:\.\d+)?)\s*(GB|GiB|MB|MiB)", text.strip())
    if match is None:
        raise DeviceError(f"simulated GPU: got {text!r}, allowed: MAJOR.MINOR:MEMORY, e.g. 6.1:2GB")
    unit = {"GB": 1e9, "GiB": 1024**3, "MB": 1e6, "MiB": 1024**2}[match.group(4)]
    size = int(float(match.group(3)) * unit)
    capability = (int(match.group(1)), int(match.group(2)))
    return DeviceSpec("cuda", f"simulated sm_{capability[0]}{capability[1]}", capability, size, size)


def cuda_devices() -> list[DeviceSpec]:
    """The CUDA devices this PyTorch build can run on, with their free memory now."""
    if not torch.cuda.is_available():
        return []
    specs = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        capability = (props.major, props.minor)
        specs.append(DeviceSpec("cuda", props.name, capability, total, free, index))
    return specs


def built_for(capability: tuple[int, int], archs: list[str] | None = None) -> bool:
    """Whether a PyTorch build with these CUDA `archs` (default: this one's) runs on `capability`: a
    cubin for the same major version and a minor at most the device's (sm_60 code runs on sm_61), or PTX
    for an older capability. cu126 wheels carry sm_50 and sm_60; cu128 and later start at sm_75."""
    archs = (torch.cuda.get_arch_list() if torch.cuda.is_available() else []) if archs is None else archs
    if not archs:
        return True  # unknown: let the first kernel launch tell
    for arch in archs:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)a?", arch)
        if match is None:
            continue
        built = (int(match.group(2)), int(match.group(3)))
        if match.group(1) == "sm" and built[0] == capability[0] and built[1] <= capability[1]:
            return True
        if match.group(1) == "compute" and built <= capability:
            return True
    return False


def no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return "this PyTorch is a CPU build (install the GPU extra: see docs/gpu.md)"
    return "no CUDA device is visible"


def choose_device(request: str, gpus: list[DeviceSpec] | None = None) -> tuple[DeviceSpec, str]:
    """The device for `--device REQUEST` and one line saying what was chosen and why."""
    if request not in DEVICE_CHOICES:
        raise DeviceError(f"--device: got {request!r}, allowed: {', '.join(DEVICE_CHOICES)}")
    if request == "cpu":
        return CPU, "device: cpu (asked for)"
    gpus = cuda_devices() if gpus is None else gpus
    usable = [gpu for gpu in gpus if gpu.capability is not None and built_for(gpu.capability)]
    if not usable:
        reason = no_cuda_reason() if not gpus else f"this PyTorch has no kernels for {gpus[0].sm}"
        if request == "cuda":
            raise DeviceError(f"--device cuda: {reason}")
        return CPU, f"device: cpu (auto: {reason})"
    best = max(usable, key=lambda gpu: gpu.free_bytes)
    return best, f"device: {best.describe()} ({'auto' if request == 'auto' else 'asked for'})"
