"""Per-request measurement: stage timing, RSS/frequency sampling, energy, bandwidth, machine facts."""

from .bandwidth import BandwidthResult, measure_read_bandwidth
from .energy import EnergyMeter
from .machine import machine_info
from .metrics import TTFT_STAGES, RequestMetrics
from .monitor import RequestMonitor
from .sampler import ResourceSampler
from .timers import StageTimer

__all__ = [
    "TTFT_STAGES",
    "BandwidthResult",
    "EnergyMeter",
    "RequestMetrics",
    "RequestMonitor",
    "ResourceSampler",
    "StageTimer",
    "machine_info",
    "measure_read_bandwidth",
]
