"""The `slimvl` command: a thin layer over `slimvl.api`.

User errors (bad image, prompt, model reference or recipe) print one line, `slimvl: error: ...`, and
exit with code 2; `--debug` lets them propagate with their traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import transformers.utils.logging as hf_logging
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slimvl.api import load, optimize
from slimvl.bench.accuracy import evaluate, next_token_agreement, paired_difference
from slimvl.bench.harness import DEFAULT_BANDWIDTH_BYTES, BenchOptions, exit_code, run_bench, write_outputs
from slimvl.bench.printers import print_report
from slimvl.bench.profiles import PROFILE_NAMES
from slimvl.bench.rows import PEER_NAMES, parse_peers
from slimvl.config import PRESET_NAMES, Recipe, resolve_recipe
from slimvl.data import examples
from slimvl.demo import N_ACCURACY, run_demo
from slimvl.errors import InputError, SlimvlError
from slimvl.models.loader import builtin_names
from slimvl.models.preprocess import load_image
from slimvl.models.weights import decode_bytes_per_token, weight_table
from slimvl.monitor import RequestMetrics
from slimvl.optimizations import Calibration

EXIT_USER_ERROR = 2
USER_ERRORS = (SlimvlError, ValueError, FileNotFoundError)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, allowed: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {value}, allowed: an integer >= 1")
    return value


def _peer_list(text: str) -> list[str]:
    try:
        return parse_peers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    # `--debug` is accepted before and after the subcommand; SUPPRESS keeps the subparser from
    # overwriting a `--debug` given before it.
    debug_after = argparse.ArgumentParser(add_help=False)
    debug_after.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    parser = argparse.ArgumentParser(
        prog="slimvl", description="Run Qwen3-VL fast and small on a laptop CPU."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[debug_after], help="answer a question about images")
    run.add_argument("model", help=f"checkpoint directory or one of {', '.join(builtin_names())}")
    run.add_argument("--image", action="append", required=True, metavar="PATH", help="an image (repeatable)")
    run.add_argument("--prompt", required=True, help="the question")
    run.add_argument(
        "--recipe", metavar="FILE|NAME", help=f"recipe file or preset ({', '.join(PRESET_NAMES)})"
    )
    run.add_argument("--max-new-tokens", type=_positive_int, default=64, metavar="N")
    run.add_argument("--threads", type=_positive_int, metavar="T", help="torch intra-op threads")
    run.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    run.set_defaults(handler=_cmd_run)

    optimize_cmd = commands.add_parser(
        "optimize", parents=[debug_after], help="write an optimized model directory"
    )
    optimize_cmd.add_argument("model", help=f"checkpoint directory or one of {', '.join(builtin_names())}")
    optimize_cmd.add_argument("--recipe", required=True, metavar="FILE|NAME", help="recipe file or preset")
    optimize_cmd.add_argument(
        "-o", "--output", required=True, type=Path, metavar="DIR", help="where to write it"
    )
    optimize_cmd.add_argument(
        "--calib",
        type=Path,
        metavar="DIR",
        help="your calibration images (+ prompts.txt); default: synthetic VQA",
    )
    optimize_cmd.set_defaults(handler=_cmd_optimize)

    info = commands.add_parser("info", parents=[debug_after], help="parameter counts and weight bytes")
    info.add_argument("model", help=f"checkpoint directory or one of {', '.join(builtin_names())}")
    info.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(handler=_cmd_info)

    recipe = commands.add_parser("recipe", parents=[debug_after], help="show or list recipes")
    recipe_commands = recipe.add_subparsers(dest="recipe_command", required=True, metavar="ACTION")
    show = recipe_commands.add_parser("show", parents=[debug_after], help="print a recipe as YAML")
    show.add_argument("recipe", metavar="NAME|FILE")
    show.set_defaults(handler=_cmd_recipe_show)
    listing = recipe_commands.add_parser("list", parents=[debug_after], help="the preset names")
    listing.set_defaults(handler=_cmd_recipe_list)

    evaluate = commands.add_parser(
        "eval", parents=[debug_after], help="exact-match accuracy on synthetic VQA"
    )
    evaluate.add_argument("model", nargs="?", default="builtin:tiny", help="default: builtin:tiny")
    evaluate.add_argument("--recipe", metavar="FILE|NAME", help="recipe file or preset")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test")
    evaluate.add_argument(
        "--n", type=_positive_int, default=1000, metavar="N", help="questions (default 1000)"
    )
    evaluate.add_argument(
        "--blind", action="store_true", help="blank images: the model must fall to guessing"
    )
    evaluate.add_argument(
        "--baseline",
        metavar="FILE|NAME",
        help="also evaluate this recipe on the same questions: paired difference, next-token agreement, KL",
    )
    evaluate.add_argument("--threads", type=_positive_int, metavar="T", help="torch intra-op threads")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.set_defaults(handler=_cmd_eval)

    bench = commands.add_parser(
        "bench", parents=[debug_after], help="measure recipes and peers side by side (standard scenario)"
    )
    bench.add_argument("model", help=f"checkpoint directory or one of {', '.join(builtin_names())}")
    bench.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="FILE|NAME",
        help="a slimvl row (repeatable; default none)",
    )
    bench.add_argument(
        "--peers",
        type=_peer_list,
        default=[],
        metavar="LIST",
        help=f"comma-separated: {', '.join(PEER_NAMES)}",
    )
    bench.add_argument(
        "--runs", type=_positive_int, default=5, metavar="N", help="measured runs per row (default 5)"
    )
    bench.add_argument(
        "--threads", type=_positive_int, metavar="T", help="threads per row (default: physical cores)"
    )
    bench.add_argument("--profile", choices=PROFILE_NAMES, default="native", help="ISA caps of a target CPU")
    bench.add_argument("--max-new-tokens", type=_positive_int, default=64, metavar="N")
    bench.add_argument("--json-out", type=Path, metavar="FILE")
    bench.add_argument("--md-out", type=Path, metavar="FILE")
    bench.add_argument("--plot", type=Path, metavar="FILE", help="PNG")
    bench.add_argument(
        "--bandwidth-bytes",
        type=_positive_int,
        default=DEFAULT_BANDWIDTH_BYTES,
        metavar="B",
        help="buffer of the read bandwidth measurement (default 2 GiB)",
    )
    bench.add_argument("--ablation", action="store_true", help="the seed's table: base, int8, ..., all")
    bench.add_argument(
        "--accuracy-n", type=_positive_int, default=1000, metavar="N", help="ablation accuracy questions"
    )
    bench.set_defaults(handler=_cmd_bench)

    demo = commands.add_parser("demo", parents=[debug_after], help="answer a few synthetic questions")
    demo.add_argument("--out", type=Path, help="where the demo images go (default: out/demo)")
    demo.add_argument(
        "--n",
        type=_positive_int,
        default=N_ACCURACY,
        metavar="N",
        help=f"accuracy questions (default {N_ACCURACY})",
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0) return instead of exiting
        return exc.code if isinstance(exc.code, int) else 0
    with _quiet_transformers():
        if args.debug:
            return args.handler(args)
        try:
            return args.handler(args)
        except USER_ERRORS as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"slimvl: error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and warnings (they would clutter or break `--json` output)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _cmd_run(args: argparse.Namespace) -> int:
    # Cheap checks first: a bad prompt, image or recipe fails before the model loads (`load` checks
    # that the recipe's optimizations are built before it loads the model).
    if not args.prompt.strip():
        raise InputError("the prompt is empty")
    images = [load_image(path) for path in args.image]
    slim = load(args.model, resolve_recipe(args.recipe), dtype=args.dtype, threads=args.threads)
    recipe = slim.recipe  # an optimized directory brings its own
    answer = slim.generate(images, args.prompt, max_new_tokens=args.max_new_tokens)
    metrics = answer.metrics
    if args.json:
        print(json.dumps(_run_record(args.model, recipe, answer.text, metrics)))
        return 0
    print(answer.text)
    Console(highlight=False).print(
        _stage_table(metrics, title=escape(f"{args.model} · recipe {recipe.name}"))
    )
    return 0


def _run_record(model: str, recipe: Recipe, text: str, metrics: RequestMetrics) -> dict[str, Any]:
    return {
        "model": model,
        "recipe": recipe.name,
        "answer": text,
        "stages_ms": dict(metrics.stages_ms),
        "decode_tokens_per_s": metrics.decode_tok_s,
        "peak_rss_mb": metrics.peak_rss_bytes / 1e6,
        "metrics": metrics.to_dict(),
    }


def _stage_table(metrics: RequestMetrics, title: str) -> Table:
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


def _cmd_optimize(args: argparse.Namespace) -> int:
    if args.calib is not None and not args.calib.is_dir():
        raise InputError(f"calibration directory not found: {args.calib}")
    recipe = resolve_recipe(args.recipe)
    out = optimize(args.model, recipe, args.output, calibration=Calibration(args.calib))
    print(f"wrote {out} (recipe {recipe.name})")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    model = load(args.model, dtype=args.dtype).loaded.model
    groups = weight_table(model)
    by_dtype: dict[str, dict[str, int]] = {}
    for cells in groups.values():
        for dtype, cell in cells.items():
            total = by_dtype.setdefault(dtype, {"params": 0, "bytes": 0})
            total["params"] += cell["params"]
            total["bytes"] += cell["bytes"]
    total = {key: sum(cell[key] for cell in by_dtype.values()) for key in ("params", "bytes")}
    record = {
        "model": args.model,
        "groups": groups,
        "by_dtype": by_dtype,
        "total": total,
        "decode_bytes_per_token": decode_bytes_per_token(model),
    }
    if args.json:
        print(json.dumps(record))
        return 0
    table = Table(title=escape(f"{args.model} weights"))
    for column in ("group", "dtype", "params", "MB"):
        table.add_column(column, justify="left" if column in ("group", "dtype") else "right")
    for group, cells in groups.items():
        for dtype, cell in cells.items():
            table.add_row(group, dtype, f"{cell['params']:,}", f"{cell['bytes'] / 1e6:.2f}")
    table.add_section()
    for dtype, cell in by_dtype.items():
        table.add_row("all", dtype, f"{cell['params']:,}", f"{cell['bytes'] / 1e6:.2f}")
    table.add_row("total", "", f"{total['params']:,}", f"{total['bytes'] / 1e6:.2f}")
    console = Console(highlight=False)
    console.print(table)
    console.print(f"weight bytes read per decode step: {record['decode_bytes_per_token'] / 1e6:.2f} MB")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    compare = args.baseline is not None
    baseline_recipe = resolve_recipe(args.baseline) if compare else None
    slim = load(args.model, resolve_recipe(args.recipe), threads=args.threads)
    recipe = slim.recipe
    questions = list(examples(args.split, args.n))
    result = evaluate(slim, blind=args.blind, keep_logprobs=compare, questions=questions, split=args.split)
    record = {"model": args.model, "recipe": recipe.name, **result.to_dict()}
    if compare:
        del slim
        reference = load(args.model, baseline_recipe, threads=args.threads)
        base = evaluate(
            reference, blind=args.blind, keep_logprobs=True, questions=questions, split=args.split
        )
        record["baseline"] = {"recipe": baseline_recipe.name, **base.to_dict()}
        record["paired_difference"] = paired_difference(base, result)
        record["next_token"] = next_token_agreement(base, result)
    if args.json:
        print(json.dumps(record))
        return 0
    low, high = result.ci95
    table = Table(title=escape(f"{args.model} · recipe {recipe.name} · {args.split} · n={result.n}"))
    for column in ("question type", "n", "accuracy", "95% CI", "majority baseline"):
        table.add_column(column, justify="left" if column == "question type" else "right")
    for qtype, row in result.by_type().items():
        base = row["majority_baseline"]
        table.add_row(
            qtype,
            str(row["n"]),
            f"{row['accuracy']:.1%}",
            f"{row['ci95'][0]:.1%}–{row['ci95'][1]:.1%}",
            "-" if base is None else f"{base:.1%}",
        )
    table.add_section()
    base = record["majority_baseline"]
    table.add_row(
        "overall",
        str(result.n),
        f"{result.accuracy:.1%}",
        f"{low:.1%}–{high:.1%}",
        "-" if base is None else f"{base:.1%}",
    )
    Console(highlight=False).print(table)
    if args.blind:
        print("blind check: every image replaced by a blank one")
    if compare:
        diff, agreement = record["paired_difference"], record["next_token"]
        print(
            f"against {record['baseline']['recipe']} ({record['baseline']['accuracy']:.1%}) on the same "
            f"questions: {diff['delta']:+.1%} (95% CI {diff['ci95'][0]:+.1%} to {diff['ci95'][1]:+.1%}); "
            f"first-token top-1 agreement {agreement['top1_agreement']:.2%}, "
            f"mean KL {agreement['mean_kl']:.2e} nats"
        )
    return 0


def _cmd_recipe_show(args: argparse.Namespace) -> int:
    print(resolve_recipe(args.recipe).to_yaml(), end="")
    return 0


def _cmd_recipe_list(args: argparse.Namespace) -> int:
    print("\n".join(PRESET_NAMES))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    options = BenchOptions(
        model=args.model,
        recipes=args.recipe,
        peers=args.peers,
        runs=args.runs,
        threads=args.threads,
        profile=args.profile,
        max_new_tokens=args.max_new_tokens,
        bandwidth_bytes=args.bandwidth_bytes,
        ablation=args.ablation,
        accuracy_n=args.accuracy_n,
    )
    report = run_bench(options)
    print_report(report)
    write_outputs(report, json_out=args.json_out, md_out=args.md_out, plot=args.plot)
    return exit_code(report)


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(out_dir=args.out, accuracy_n=args.n)
