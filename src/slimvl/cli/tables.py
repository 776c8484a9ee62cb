"""Rich tables for the terminal: a request's stages, a model's weights, an accuracy report."""

from __future__ import annotations

from rich.table import Table

from slimvl.eval import EvalResult
from slimvl.monitor import RequestMetrics


def stage_table(metrics: RequestMetrics, title: str) -> Table:
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("ms", justify="right")
    for stage, ms in metrics.stages_ms.items():
        table.add_row(stage, f"{ms:.1f}")
    table.add_section()
    table.add_row("time to first token", f"{metrics.ttft_ms:.1f}")
    tok_s = metrics.decode_tok_s
    table.add_row("decode tok/s", "-" if tok_s is None else f"{tok_s:.1f}")
    table.add_row(
        "tokens (prompt / visual / new)",
        f"{metrics.prompt_tokens} / {metrics.visual_tokens} / {metrics.new_tokens}",
    )
    table.add_row("peak RSS MB", f"{metrics.peak_rss_bytes / 1e6:.0f}")
    return table


def weights_table(
    title: str,
    groups: dict[str, dict[str, dict[str, int]]],
    by_dtype: dict[str, dict[str, int]],
    total: dict[str, int],
) -> Table:
    """Parameters and MB per module group and dtype, then per dtype, then in all."""
    table = Table(title=title)
    for column in ("group", "dtype", "params", "MB"):
        table.add_column(column, justify="left" if column in ("group", "dtype") else "right")
    for group, cells in groups.items():
        for dtype, cell in cells.items():
            table.add_row(group, dtype, f"{cell['params']:,}", f"{cell['bytes'] / 1e6:.2f}")
    table.add_section()
    for dtype, cell in by_dtype.items():
        table.add_row("all", dtype, f"{cell['params']:,}", f"{cell['bytes'] / 1e6:.2f}")
    table.add_row("total", "", f"{total['params']:,}", f"{total['bytes'] / 1e6:.2f}")
    return table


def pruning_table(plan: dict) -> Table:
    """A pruning plan: the sparsity each decoder linear reached (unstructured), or the channels each MLP
    and the key/value heads each decoder attention kept and the decoder layers removed (structured), and
    what was protected."""
    ratios = ", ".join(f"{r:.3f}" for r in plan["ratios"])
    kind = "structured, " if plan.get("structured") else ""
    title = f"pruning: {kind}{plan['criterion']}, {plan['schedule']} (ratio after each step: {ratios})"
    table = Table(title=title)
    columns = ("module", "width", "kept") if plan.get("structured") else ("linear", "shape", "sparsity")
    for column in columns:
        table.add_column(column, justify="left" if column in ("module", "linear") else "right")
    if plan.get("structured"):
        influence = plan.get("block_influence", [])
        for index in plan.get("removed_layers", []):
            table.add_row(f"decoder layer {index}", f"influence {influence[index]:.4f}", "removed")
        for parts, widths in (("channels", plan["widths"]), ("kv heads", plan.get("heads", {}))):
            for name, (original, kept) in widths.items():
                table.add_row(name, f"{original} -> {kept} {parts}", f"{kept / original:.1%}")
    for name, record in plan.get("layers", {}).items():
        table.add_row(name, " x ".join(map(str, record["shape"])), f"{record['sparsity']:.1%}")
    for name in plan["protected"]:
        table.add_row(name, "", "protected")
    return table


def precision_table(plan: dict) -> Table:
    """An adaptive precision plan: each unit's format, bytes and measured divergence in every format
    it could take."""
    total = plan["planned_bytes"] / 1e6
    budget = ""
    if plan.get("budget_bytes") is not None and "budgeted_bytes" in plan:
        budget = (
            f" ({plan['budgeted_bytes'] / 1e6:.2f} MB within a {plan['budget_bytes'] / 1e6:.2f} MB budget)"
        )
    divergence = plan.get("planned_divergence")
    summed = "" if divergence is None else f", summed KL {divergence:.3g} nats"
    table = Table(title=f"adaptive precision: {plan['method']} plan, {total:.2f} MB{budget}{summed}")
    for column in ("unit", "format", "MB", "KL by format (nats, first answer token)"):
        table.add_column(
            column,
            justify="left" if column in ("unit", "KL by format (nats, first answer token)") else "right",
        )
    for name, unit in plan["units"].items():
        fmt = plan["formats"][name]
        kl = unit.get("divergence")
        shown = "-" if kl is None else ", ".join(f"{f} {v:.2g}" for f, v in kl.items())
        table.add_row(name, fmt, f"{unit['bytes'][fmt] / 1e6:.3f}", shown)
    return table


def accuracy_table(title: str, result: EvalResult, majority_baseline: float | None) -> Table:
    """Accuracy with its 95% CI and the majority-answer baseline, per question type and overall."""
    table = Table(title=title)
    for column in ("question type", "n", "accuracy", "95% CI", "majority baseline"):
        table.add_column(column, justify="left" if column == "question type" else "right")
    for qtype, row in result.by_type().items():
        table.add_row(
            qtype, *_accuracy_cells(row["n"], row["accuracy"], row["ci95"], row["majority_baseline"])
        )
    table.add_section()
    table.add_row("overall", *_accuracy_cells(result.n, result.accuracy, result.ci95, majority_baseline))
    return table


def _accuracy_cells(
    n: int, accuracy: float, ci95: tuple[float, float], baseline: float | None
) -> tuple[str, str, str, str]:
    low, high = ci95
    return str(n), f"{accuracy:.1%}", f"{low:.1%}–{high:.1%}", "-" if baseline is None else f"{baseline:.1%}"
