"""Assign each unit a format: the measured-sensitivity plan under a byte budget, and the two baselines it
is compared with (uniform formats; llama.cpp's Q4_K_M heuristic).

The plan minimises the summed divergence of the units (each measured alone: `sensitivity`) within the
byte budget, a multiple-choice knapsack solved by Lagrangian relaxation — for a price λ per byte each
unit takes the format minimising divergence + λ·bytes; the smallest λ whose plan fits is found by
bisection — then the bytes left are spent greedily on the upgrades that remove the most divergence per
byte. Given a divergence budget as well, the plan then keeps lowering the units that cost the least
divergence per byte saved while the total stays within it.
"""

from __future__ import annotations

from slimvl.precision.units import FORMAT_BITS, Unit

Formats = dict[str, str]  # unit name -> format


def total_bytes(units: list[Unit], formats: Formats) -> int:
    return sum(u.nbytes(formats[u.name]) for u in units)


def total_divergence(divergence: dict[str, dict[str, float]], formats: Formats) -> float:
    return sum(divergence[name][fmt] for name, fmt in formats.items())


def sensitivity_plan(
    units: list[Unit],
    divergence: dict[str, dict[str, float]],
    budget_bytes: int,
    max_divergence: float | None = None,
) -> Formats:
    """``divergence[unit][fmt]`` for every format a unit may take; raises ValueError when even the
    smallest formats exceed ``budget_bytes``."""
    options = {u.name: sorted(divergence[u.name], key=lambda f: u.nbytes(f)) for u in units}
    by_name = {u.name: u for u in units}
    smallest = {name: fmts[0] for name, fmts in options.items()}
    if total_bytes(units, smallest) > budget_bytes:
        raise ValueError(
            f"budget: {budget_bytes} bytes is below the {total_bytes(units, smallest)} bytes of the smallest formats"
        )

    def at_price(price: float) -> Formats:
        return {
            name: min(
                fmts,
                key=lambda f: (
                    divergence[name][f] + price * by_name[name].nbytes(f),
                    by_name[name].nbytes(f),
                ),
            )
            for name, fmts in options.items()
        }

    low, high = 0.0, 1.0
    while total_bytes(units, at_price(high)) > budget_bytes:
        high *= 4
    if total_bytes(units, at_price(low)) <= budget_bytes:
        high = low
    for _ in range(60):
        if high - low <= 1e-12 * max(high, 1e-30):
            break
        mid = (low + high) / 2
        low, high = (low, mid) if total_bytes(units, at_price(mid)) <= budget_bytes else (mid, high)
    plan = at_price(high)
    _spend(units, options, divergence, plan, budget_bytes)
    if max_divergence is not None:
        _shrink(units, options, divergence, plan, max_divergence)
    return plan


def _spend(units, options, divergence, plan: Formats, budget_bytes: int) -> None:
    """Upgrade units, most divergence removed per byte first, while the budget allows."""
    left = budget_bytes - total_bytes(units, plan)
    while True:
        best = None
        for u in units:
            now = plan[u.name]
            for fmt in options[u.name]:
                extra = u.nbytes(fmt) - u.nbytes(now)
                gain = divergence[u.name][now] - divergence[u.name][fmt]
                if 0 < extra <= left and gain > 0 and (best is None or gain / extra > best[0]):
                    best = (gain / extra, u, fmt, extra)
        if best is None:
            return
        _, u, fmt, extra = best
        plan[u.name], left = fmt, left - extra


def _shrink(units, options, divergence, plan: Formats, max_divergence: float) -> None:
    """Lower units, least divergence added per byte saved first, while the total stays within budget."""
    total = total_divergence(divergence, plan)
    while True:
        best = None
        for u in units:
            now = plan[u.name]
            for fmt in options[u.name]:
                saved = u.nbytes(now) - u.nbytes(fmt)
                cost = divergence[u.name][fmt] - divergence[u.name][now]
                if (
                    saved > 0
                    and total + max(cost, 0) <= max_divergence
                    and (best is None or cost / saved < best[0])
                ):
                    best = (cost / saved, u, fmt)
        if best is None:
            return
        cost, u, fmt = best
        total += divergence[u.name][fmt] - divergence[u.name][plan[u.name]]
        plan[u.name] = fmt


def uniform_plan(units: list[Unit], fmt: str, fallback: str = "int8") -> Formats:
    """Every unit in ``fmt`` (units that cannot take it in ``fallback``)."""
    return {u.name: fmt if u.allows(fmt) else fallback for u in units}


def llama_cpp_plan(units: list[Unit], low: str = "int4", high: str = "int8") -> Formats:
    """llama.cpp's Q4_K_M choice transposed to two formats: ``high`` for ``attn_v`` and ``mlp_down`` in
    decoder layers i < n/8, i >= 7n/8 and every third layer between ((i - n/8) % 3 == 2; integer
    division, as llama.cpp's ``use_more_bits``), and for the
    output layer (the table); ``low`` elsewhere (``high`` where a unit cannot take ``low``). The vision
    side, which llama.cpp quantizes apart, gets ``low`` like the rest."""
    layers = 1 + max((u.layer for u in units if u.name.startswith("decoder.")), default=-1)
    eighth = layers // 8

    def more_bits(i: int) -> bool:
        return i < eighth or i >= 7 * layers // 8 or (i - eighth) % 3 == 2

    plan = {}
    for u in units:
        favoured = u.role == "table" or (
            u.name.startswith("decoder.") and u.role in ("attn_v", "mlp_down") and more_bits(u.layer)
        )
        plan[u.name] = high if favoured or not u.allows(low) else low
    return plan


def formats_between(min_precision: str, max_precision: str, sixteen_bit: str) -> list[str]:
    """The formats from ``min_precision`` to ``max_precision`` (one 16-bit format: ``sixteen_bit``)."""
    lo, hi = FORMAT_BITS[min_precision], FORMAT_BITS[max_precision]
    return [f for f in ("int4", "int8", sixteen_bit, "fp32") if lo <= FORMAT_BITS[f] <= hi]
