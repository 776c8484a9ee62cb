"""The gains slimvl's specification estimated for each optimization (its "seed" estimates), per
ablation row, as they were written before anything was measured.

`slimvl bench --ablation` prints each beside the measured value (`slimvl.bench.ablation`).
"""

from __future__ import annotations


def _estimate(label: str, memory: str, speedup: str, power: str, accuracy: str) -> dict[str, str]:
    return {
        "label": label,
        "memory_reduction": memory,
        "speedup": speedup,
        "power": power,
        "accuracy": accuracy,
    }


# Marked "Estimated" where they were written; keyed by optimization (`base` has none). Ablation rows
# name the entry they are compared with (`slimvl.bench.ablation.AblationRow`).
SEED_ESTIMATES: dict[str, dict[str, str] | None] = {
    "base": None,
    "int8": _estimate("+ INT8", "~75%", "2.0x", "+40%", "-1%"),
    "sparsify": _estimate("+ Sparsification", "~50% of visual tokens", "1.5x", "+20%", "-0.5%"),
    "prune": _estimate("+ Pruning", "~30%", "1.3x", "+15%", "-2%"),
    "adaptive": _estimate("+ Adaptive Precision", "Variable", "1.1x", "+10%", "-0.5%"),
    "all": _estimate("All combined", "~80%", "3.0x", "+60%", "-3%"),
}
