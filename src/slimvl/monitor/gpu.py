"""GPU memory of a request, for a model with parts on CUDA devices: PyTorch's allocator peak on each
device (reset when the request starts), and the device's used memory as NVML (`nvidia-ml-py`) reports
it for all processes, where it can be read. GPU power and energy are `EnergyMeter`'s (NVML)."""

from __future__ import annotations

import torch


class GpuMemory:
    def __init__(self, devices: tuple[int, ...] = ()) -> None:
        self.devices = devices

    def start(self) -> None:
        for index in self.devices:
            torch.cuda.reset_peak_memory_stats(index)

    def peak_bytes(self) -> int | None:
        """The allocator's peak over the devices since `start`, summed; None without devices."""
        if not self.devices:
            return None
        return sum(torch.cuda.max_memory_allocated(index) for index in self.devices)


def nvml_used_bytes(index: int) -> int | None:
    """Memory in use on GPU `index` (every process), or None where NVML cannot be read."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no nvidia-ml-py, no driver, no device: nothing to report
        return None
