import mmap
import time

import numpy as np
import pytest

from slimvl.monitor import RequestMonitor, ResourceSampler
from slimvl.monitor.energy import EnergyMeter

ALLOC_BYTES = 200 * 1024**2


def test_sampler_sees_allocation() -> None:
    baseline = ResourceSampler(interval_s=0.01)
    with baseline:
        time.sleep(0.03)
    with ResourceSampler(interval_s=0.01) as sampler:
        # A fresh anonymous mapping, written through: its pages cannot come from memory the C
        # allocator kept from earlier tests (slimvl.load keeps up to 512 MiB of freed heap).
        block = mmap.mmap(-1, ALLOC_BYTES)
        np.frombuffer(block, dtype=np.uint8)[:] = 1
        time.sleep(0.05)
        block.close()
    assert sampler.n_samples >= 2
    assert sampler.peak_rss_bytes - baseline.mean_rss_bytes > 0.7 * ALLOC_BYTES
    assert 0 < sampler.mean_rss_bytes <= sampler.peak_rss_bytes
    assert sampler.cpu_percent >= 0
    if sampler.freq_mhz_mean is not None:
        lo, hi = sampler.freq_mhz_min, sampler.freq_mhz_max
        assert lo - 1e-6 <= sampler.freq_mhz_mean <= hi + 1e-6


def test_sampler_thread_stops_when_body_raises() -> None:
    sampler = ResourceSampler(interval_s=0.01)
    with pytest.raises(RuntimeError, match="boom"), sampler:
        assert sampler.is_running
        raise RuntimeError("boom")
    assert not sampler.is_running
    assert sampler.n_samples >= 2


def test_request_monitor_end_to_end(tmp_path) -> None:
    energy = EnergyMeter(powercap_root=tmp_path / "absent", use_nvml=False)
    with RequestMonitor(threads=2, weight_bytes=10, decode_weight_bytes_per_token=4, energy=energy) as mon:
        with mon.stage("prefill"):
            time.sleep(0.01)
        with mon.stage("decode"):
            time.sleep(0.02)
    m = mon.metrics(new_tokens=3, prompt_tokens=7, visual_tokens=64, visual_tokens_kept=16)
    assert set(m.stages_ms) == {"prefill", "decode"}
    assert m.wall_s >= 0.03
    assert m.decode_tok_s is not None and m.decode_tok_s > 0
    assert m.energy_j is None and "not readable" in m.energy_note
    assert (m.threads, m.visual_tokens_kept, m.weight_bytes) == (2, 16, 10)
    assert m.peak_rss_bytes > 0


def test_request_monitor_metrics_only_after_exit(tmp_path) -> None:
    mon = RequestMonitor(energy=EnergyMeter(powercap_root=tmp_path, use_nvml=False))
    with pytest.raises(RuntimeError):
        mon.metrics(new_tokens=1)
