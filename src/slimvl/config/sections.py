"""The recipe's sections: one config class per optimization (INT8, visual token sparsification,
pruning, adaptive precision), each registered with `@recipe_section` (`slimvl.config.registration`)
and validating itself on construction.

Messages read ``Class.field: got <value>, allowed: <what is allowed>``. Configs are frozen: derive
variants with ``dataclasses.replace`` (which re-runs validation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from slimvl.config.registration import (
    RECIPE_FORMAT_VERSION,
    Section,
    ValidatedConfig,
    recipe_section,
    registered,
)

__all__ = [
    "PRECISION_BITS",
    "RECIPE_FORMAT_VERSION",
    "AdaptivePrecisionConfig",
    "INT8QuantizationConfig",
    "PruningConfig",
    "Section",
    "SparsificationConfig",
    "recipe_section",
    "sections",
]

# Bit width of each precision; the order used by AdaptivePrecisionConfig (fp16 and bf16 tie).
PRECISION_BITS: dict[str, int] = {"int4": 4, "int8": 8, "fp16": 16, "bf16": 16, "fp32": 32}


def sections() -> tuple[Section, ...]:
    """Every registered section (the four below, and any registered since), in the order they are applied."""
    return registered()


@recipe_section("int8", order=20, handler="slimvl.quant.section")
@dataclass(frozen=True)
class INT8QuantizationConfig(ValidatedConfig):
    """INT8 quantization of linear layers.

    ``weight_only`` keeps activations in floating point, which is the only mode where
    ``activation_bits`` of 16 or 32 makes sense: 16 lets a layer's kernel round them to bf16 (where
    that kernel is faster), 32 keeps them fp32; ``static`` and ``dynamic`` quantize activations to 8
    bits (static from ``calibration_samples`` inputs, dynamic per batch) and only kernels that compute
    exactly that get chosen (see ``slimvl.quant.kernels``).
    ``smoothquant_alpha`` enables SmoothQuant activation-to-weight scale migration.
    """

    quantization_mode: str = "dynamic"
    activation_bits: int = 8
    weight_bits: int = 8
    quantize_embeddings: bool = True
    quantize_attention: bool = True
    quantize_mlp: bool = True
    quantize_vision: bool = True
    smoothquant_alpha: float | None = None
    calibration_samples: int = 32
    reduce_range: bool = True

    QUANTIZATION_MODES: ClassVar[tuple[str, ...]] = ("static", "dynamic", "weight_only")

    def __post_init__(self) -> None:
        self._check_choice("quantization_mode", self.QUANTIZATION_MODES)
        self._check_choice("weight_bits", (8,))
        self._check_choice("activation_bits", (8, 16, 32))
        if self.quantization_mode != "weight_only" and self.activation_bits != 8:
            self._fail(
                "activation_bits",
                f"8 when quantization_mode is {self.quantization_mode!r} (16 and 32 only with 'weight_only')",
            )
        for name in (
            "quantize_embeddings",
            "quantize_attention",
            "quantize_mlp",
            "quantize_vision",
            "reduce_range",
        ):
            self._check_bool(name)
        if self.smoothquant_alpha is not None:
            self._check_number("smoothquant_alpha", "None or a number in [0, 1]", lambda v: 0 <= v <= 1)
        self._check_int("calibration_samples", 1)


@recipe_section("sparsification", order=30, handler="slimvl.sparsify.section")
@dataclass(frozen=True)
class SparsificationConfig(ValidatedConfig):
    """Visual token sparsification: drop the least useful visual tokens before the decoder.

    ``scorer`` picks how tokens are ranked: ``"attention"`` (the default: it measured best on
    ``builtin:tiny``, see benchmarks/results/sparsify_curves_tiny.json) uses the question's attention to
    the visual tokens in decoder layer ``score_layer`` (the layers before it see every token);
    ``"text_guided"`` the cosine similarity of question-token embeddings and visual tokens before the
    decoder (cheapest: the whole prefill runs on the kept tokens); ``"distilled"`` a small scorer
    before the decoder, fitted when the recipe is applied to reproduce the attention scorer of layer
    ``score_layer`` on ``calibration_samples`` requests (the calibration images, or the synthetic
    training split) and saved with the optimized model; ``"vision"`` the same kind of scorer fitted on
    the visual tokens' first DeepStack features alone, which ranks them inside the vision encoder right
    after that layer, so that the rest of the vision tower and the whole prefill see only the kept
    tokens (models with DeepStack layers). ``sparsity_method`` picks
    which tokens survive: the ``top_k`` scored, a ``random`` subset (seeded by ``seed``), or
    a uniform spatial ``grid``.
    """

    sparsity_ratio: float = 0.6
    sparsity_method: str = "top_k"
    min_tokens_per_image: int = 32
    max_tokens_per_image: int = 128
    scorer: str = "attention"
    score_layer: int = 1
    seed: int = 0
    calibration_samples: int = 256

    SPARSITY_METHODS: ClassVar[tuple[str, ...]] = ("top_k", "random", "grid")
    SCORERS: ClassVar[tuple[str, ...]] = ("text_guided", "attention", "distilled", "vision")

    def __post_init__(self) -> None:
        self._check_number("sparsity_ratio", "a number in [0, 1)", lambda v: 0 <= v < 1)
        self._check_choice("sparsity_method", self.SPARSITY_METHODS)
        self._check_int("min_tokens_per_image", 1)
        self._check_int("max_tokens_per_image", 1)
        if self.max_tokens_per_image < self.min_tokens_per_image:
            self._fail(
                "max_tokens_per_image",
                f"an int >= min_tokens_per_image ({self.min_tokens_per_image})",
            )
        self._check_choice("scorer", self.SCORERS)
        self._check_int("score_layer", 0)
        self._check_int("seed", 0)
        self._check_int("calibration_samples", 2)

    @property
    def ranks_by_scorer(self) -> bool:
        """Whether `scorer` decides which tokens stay: top-k selection with a ratio above 0."""
        return self.sparsity_method == "top_k" and self.sparsity_ratio > 0

    def tokens_to_keep(self, n_visual: int) -> int:
        """Number of the ``n_visual`` tokens of one image to keep.

        ``round((1 - sparsity_ratio) * n_visual)`` clamped to
        ``[min_tokens_per_image, max_tokens_per_image]`` and never more than ``n_visual``.
        A ratio of 0 disables sparsification, so all tokens are kept regardless of the max.
        """
        if isinstance(n_visual, bool) or not isinstance(n_visual, int) or n_visual < 0:
            raise ValueError(f"tokens_to_keep.n_visual: got {n_visual!r}, allowed: an int >= 0")
        if self.sparsity_ratio == 0:
            return n_visual
        keep = round((1 - self.sparsity_ratio) * n_visual)
        keep = max(self.min_tokens_per_image, min(keep, self.max_tokens_per_image))
        return min(keep, n_visual)


@recipe_section("pruning", order=10, handler="slimvl.prune.section")
@dataclass(frozen=True)
class PruningConfig(ValidatedConfig):
    """Weight pruning of the language model's decoder linears, each output row losing
    ``round(pruning_ratio * in_features)`` weights.

    ``criterion`` ``"wanda"`` scores weights by ``|W| * ||x||`` (Sun et al., 2023), ``"sparsegpt"``
    prunes by the OBS saliency and updates the remaining weights to compensate (Frantar & Alistarh,
    2023), both from ``calibration_samples`` calibration requests, each decoder layer seeing the
    already-pruned layers before it; ``"magnitude"`` uses ``|W|`` alone. ``iterative`` reaches the ratio
    over ``num_pruning_steps`` (see `ratio_at_step`), re-collecting the statistics at each step. Modules
    whose qualified name contains an entry of ``protected_modules`` are never pruned.

    ``structured`` removes whole parts instead, so the matrices shrink: ``pruning_ratio`` of every MLP's
    channels (decoder and vision encoder), ``head_ratio`` of each decoder layer's key/value heads with
    their query heads, and ``layers_removed`` whole decoder layers of least block influence (ShortGPT),
    scored by ``criterion`` ``"wanda"`` (activation-weighted) or ``"magnitude"``.

    ``fine_tune_steps`` > 0 recovers afterwards: the pruned linears trained by Adam at
    ``fine_tune_learning_rate`` to match the unpruned model's answers on the calibration requests
    (`slimvl.prune.recover`).
    """

    pruning_ratio: float = 0.3
    pruning_schedule: str = "iterative"
    num_pruning_steps: int = 5
    criterion: str = "wanda"
    structured: bool = False
    protected_modules: tuple[str, ...] = (
        "lm_head",
        "embed_tokens",
        "visual.merger",
        "visual.deepstack_merger_list",
    )
    fine_tune_steps: int = 0
    calibration_samples: int = 64
    head_ratio: float = 0.0
    layers_removed: int = 0
    fine_tune_learning_rate: float = 2e-5

    SCHEDULES: ClassVar[tuple[str, ...]] = ("iterative", "one_shot")
    CRITERIA: ClassVar[tuple[str, ...]] = ("magnitude", "wanda", "sparsegpt")

    def __post_init__(self) -> None:
        self._check_number("pruning_ratio", "a number in [0, 1)", lambda v: 0 <= v < 1)
        self._check_choice("pruning_schedule", self.SCHEDULES)
        self._check_int("num_pruning_steps", 1)
        self._check_choice("criterion", self.CRITERIA)
        self._check_bool("structured")
        modules = self.protected_modules
        if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
            self._fail("protected_modules", "a tuple or list of str")
        object.__setattr__(self, "protected_modules", tuple(modules))
        self._check_int("fine_tune_steps", 0)
        self._check_int("calibration_samples", 1)
        self._check_number("head_ratio", "a number in [0, 1)", lambda v: 0 <= v < 1)
        self._check_int("layers_removed", 0)
        self._check_number("fine_tune_learning_rate", "a number in (0, 1)", lambda v: 0 < v < 1)
        for name in ("head_ratio", "layers_removed"):
            if getattr(self, name) and not self.structured:
                self._fail(name, "0 unless structured is true (heads and layers leave whole)")

    def ratio_at_step(self, step: int) -> float:
        """Cumulative pruning ratio to reach after step ``step`` (1-based) of the schedule.

        ``iterative`` follows the cubic schedule of Zhu & Gupta (2017),
        ``ratio * (1 - (1 - step / n) ** 3)``: prune fast while redundancy is high, then
        slow down. ``one_shot`` reaches the full ratio at every step.
        """
        return self.pruning_ratio * self.schedule_fraction(step)

    def schedule_fraction(self, step: int) -> float:
        """The fraction of every structured ratio reached after step ``step`` (see `ratio_at_step`)."""
        n = self.num_pruning_steps
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= n:
            raise ValueError(f"ratio_at_step.step: got {step!r}, allowed: an int in [1, {n}]")
        if self.pruning_schedule == "one_shot":
            return 1.0
        return 1 - (1 - step / n) ** 3


@recipe_section("adaptive_precision", order=15, handler="slimvl.precision.section")
@dataclass(frozen=True)
class AdaptivePrecisionConfig(ValidatedConfig):
    """A per-unit format (int4 < int8 < fp16 == bf16 < fp32) from measured sensitivity, within
    ``[min_precision, max_precision]``, and a run-time controller.

    Applied before int8 (order 15): it needs the float weights to measure and decides every unit's
    format itself, int8 included. ``plan``: ``"sensitivity"`` — the least summed divergence (each unit's
    mean KL on the first answer token, alone in a format, over ``calibration_samples`` requests) within
    a weight-byte budget: ``target_bits`` per weight on average if given, else the bytes of every unit in
    ``base_precision``; then, while the summed divergence stays within ``sensitivity_budget`` (nats),
    units are lowered further. ``"uniform"``: every unit in ``min_precision``. ``"llama_cpp"``:
    llama.cpp's Q4_K_M heuristic with ``min_precision`` and the next wider format.
    ``vision_precision``: one format for every vision unit, outside the plan and its budget (the vision
    tower runs ~1000-row GEMMs, where the int4 kernels trail int8 on CPUs with VNNI); None: planned
    like the rest. ``enable_dynamic_precision``: a controller picks each request's mode from the request
    and the machine's state (threads, image size, visual tokens), keeping ``memory_headroom_mb`` free.
    """

    base_precision: str = "fp16"
    enable_dynamic_precision: bool = True
    min_precision: str = "int8"
    max_precision: str = "fp32"
    sensitivity_budget: float = 0.01
    memory_headroom_mb: int = 512
    target_bits: float | None = None
    plan: str = "sensitivity"
    calibration_samples: int = 16
    vision_precision: str | None = None

    PLANS: ClassVar[tuple[str, ...]] = ("sensitivity", "uniform", "llama_cpp")

    def __post_init__(self) -> None:
        precisions = tuple(PRECISION_BITS)
        order = "int4 < int8 < fp16 == bf16 < fp32"
        for name in ("base_precision", "min_precision", "max_precision"):
            self._check_choice(name, precisions)
        self._check_bool("enable_dynamic_precision")
        base_bits = PRECISION_BITS[self.base_precision]
        if PRECISION_BITS[self.min_precision] > base_bits:
            self._fail(
                "min_precision", f"a precision no wider than base_precision {self.base_precision!r} ({order})"
            )
        if PRECISION_BITS[self.max_precision] < base_bits:
            self._fail(
                "max_precision",
                f"a precision at least as wide as base_precision {self.base_precision!r} ({order})",
            )
        self._check_number("sensitivity_budget", "a finite number > 0", lambda v: 0 < v < math.inf)
        if self.target_bits is not None:
            lo, hi = PRECISION_BITS[self.min_precision], PRECISION_BITS[self.max_precision]
            self._check_number(
                "target_bits",
                f"None or a number of bits per weight in [{lo}, {hi}] (min_precision..max_precision)",
                lambda v: lo <= v <= hi,
            )
        self._check_choice("plan", self.PLANS)
        self._check_int("calibration_samples", 1)
        if self.vision_precision is not None:
            self._check_choice("vision_precision", precisions)
        self._check_int("memory_headroom_mb", 0)
