"""Per-request metrics and the arithmetic derived from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TTFT_STAGES = ("preprocess", "vision", "sparsify", "prefill")
"""Stages before the first token: image/text preprocessing, the vision tower, visual token
sparsification and the prefill forward pass that yields token 1. Missing stages count as 0."""


@dataclass
class RequestMetrics:
    """What one request cost. Stage times are milliseconds; sizes are bytes.

    ``decode_weight_bytes_per_token`` is the weight bytes read per decode step (decoder
    layers + lm_head, without the vision tower, and without the embedding table when lm_head
    is a separate tensor); the caller computes it.
    """

    stages_ms: dict[str, float]
    prompt_tokens: int = 0
    visual_tokens: int = 0  # before sparsification
    visual_tokens_kept: int = 0
    new_tokens: int = 0
    wall_s: float = 0.0  # end to end
    cpu_s: float = 0.0  # process CPU time, all threads
    peak_rss_bytes: int = 0
    mean_rss_bytes: int = 0
    weight_bytes: int = 0
    decode_weight_bytes_per_token: int = 0
    energy_j: float | None = None
    energy_note: str = ""
    freq_mhz_min: float | None = None
    freq_mhz_mean: float | None = None
    freq_mhz_max: float | None = None
    cpu_percent: float = 0.0
    threads: int = 0
    stage_counts: dict[str, int] = field(default_factory=dict)
    mode: dict[str, Any] | None = None  # the run-time controller's decision for this request, if any
    gpu_peak_bytes: int | None = None  # PyTorch's allocator peak on the GPUs the model uses; None: none

    @property
    def vision_ms(self) -> float:
        return self.stages_ms.get("vision", 0.0)

    @property
    def prefill_ms(self) -> float:
        return self.stages_ms.get("prefill", 0.0)

    @property
    def ttft_ms(self) -> float:
        """Time to first token: the sum of ``TTFT_STAGES``."""
        return sum(self.stages_ms.get(name, 0.0) for name in TTFT_STAGES)

    @property
    def decode_tokens(self) -> int:
        """Tokens produced in the decode stage; the first new token comes from prefill."""
        return max(self.new_tokens - 1, 0)

    @property
    def decode_tok_s(self) -> float | None:
        decode_ms = self.stages_ms.get("decode", 0.0)
        if self.decode_tokens < 1 or decode_ms <= 0:
            return None
        return self.decode_tokens / (decode_ms / 1e3)

    @property
    def e2e_s(self) -> float:
        return self.wall_s

    @property
    def cpu_s_per_token(self) -> float | None:
        return self.cpu_s / self.new_tokens if self.new_tokens > 0 else None

    @property
    def achieved_gbps(self) -> float | None:
        """Weight bytes streamed per second during decode (1e9 bytes/s)."""
        tok_s = self.decode_tok_s
        if tok_s is None or self.decode_weight_bytes_per_token <= 0:
            return None
        return self.decode_weight_bytes_per_token * tok_s / 1e9

    @property
    def energy_j_per_token(self) -> float | None:
        if self.energy_j is None or self.new_tokens <= 0:
            return None
        return self.energy_j / self.new_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field plus derived values; MB are 1e6 bytes."""
        out = asdict(self)
        out.update(
            vision_ms=self.vision_ms,
            prefill_ms=self.prefill_ms,
            ttft_ms=self.ttft_ms,
            decode_tokens=self.decode_tokens,
            decode_tok_s=self.decode_tok_s,
            e2e_s=self.e2e_s,
            peak_rss_mb=self.peak_rss_bytes / 1e6,
            gpu_peak_mb=None if self.gpu_peak_bytes is None else self.gpu_peak_bytes / 1e6,
            mean_rss_mb=self.mean_rss_bytes / 1e6,
            cpu_s_per_token=self.cpu_s_per_token,
            achieved_gbps=self.achieved_gbps,
            energy_j_per_token=self.energy_j_per_token,
            freq_mhz={"min": self.freq_mhz_min, "mean": self.freq_mhz_mean, "max": self.freq_mhz_max},
        )
        return out
