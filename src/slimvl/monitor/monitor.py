"""One object that times, samples and meters a request."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from .energy import EnergyMeter
from .gpu import GpuMemory
from .metrics import RequestMetrics
from .sampler import ResourceSampler
from .timers import StageTimer


class RequestMonitor:
    """``with RequestMonitor(...) as mon:`` wraps a request; ``mon.stage(name)`` times a stage.

    After the block, ``mon.metrics(...)`` returns the ``RequestMetrics``. Pass a shared
    ``energy`` meter when monitoring many requests (probing NVML each time is slow).
    ``threads`` defaults to torch's current intra-op thread count.
    """

    def __init__(
        self,
        threads: int | None = None,
        weight_bytes: int = 0,
        decode_weight_bytes_per_token: int = 0,
        interval_s: float = 0.05,
        energy: EnergyMeter | None = None,
        gpu_devices: tuple[int, ...] = (),
    ) -> None:
        self.threads = threads if threads is not None else torch.get_num_threads()
        self.weight_bytes = weight_bytes
        self.decode_weight_bytes_per_token = decode_weight_bytes_per_token
        self.timer = StageTimer()
        self.sampler = ResourceSampler(interval_s=interval_s)
        self.energy = energy if energy is not None else EnergyMeter()
        self.gpu = GpuMemory(gpu_devices)
        self._energy_j: float | None = None
        self._state = "new"

    def __enter__(self) -> RequestMonitor:
        if self._state != "new":
            raise RuntimeError("a RequestMonitor monitors one request; create a new one")
        self.energy.start()
        self.gpu.start()
        self.sampler.start()
        self.timer.start()
        self._state = "running"
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.stop()
        self.sampler.stop()
        self._energy_j = self.energy.stop()
        self._state = "done"

    def stage(self, name: str) -> AbstractContextManager[None]:
        return self.timer.stage(name)

    def metrics(
        self,
        new_tokens: int,
        prompt_tokens: int = 0,
        visual_tokens: int = 0,
        visual_tokens_kept: int = 0,
        mode: dict | None = None,
    ) -> RequestMetrics:
        if self._state != "done":
            raise RuntimeError("RequestMonitor.metrics() is available after the with-block ends")
        return RequestMetrics(
            stages_ms=self.timer.stages_ms,
            stage_counts=self.timer.stage_counts,
            prompt_tokens=prompt_tokens,
            visual_tokens=visual_tokens,
            visual_tokens_kept=visual_tokens_kept,
            new_tokens=new_tokens,
            wall_s=self.timer.wall_s,
            cpu_s=self.timer.cpu_s,
            peak_rss_bytes=self.sampler.peak_rss_bytes,
            gpu_peak_bytes=self.gpu.peak_bytes(),
            mean_rss_bytes=self.sampler.mean_rss_bytes,
            weight_bytes=self.weight_bytes,
            decode_weight_bytes_per_token=self.decode_weight_bytes_per_token,
            energy_j=self._energy_j,
            energy_note=self.energy.note,
            freq_mhz_min=self.sampler.freq_mhz_min,
            freq_mhz_mean=self.sampler.freq_mhz_mean,
            freq_mhz_max=self.sampler.freq_mhz_max,
            cpu_percent=self.sampler.cpu_percent,
            threads=self.threads,
            mode=mode,
        )
