"""The `slimvl` argument parser: every subcommand, its options and its handler in `commands`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from slimvl.bench.harness import DEFAULT_BANDWIDTH_BYTES
from slimvl.bench.profiles import PROFILE_NAMES
from slimvl.bench.rows import PEER_NAMES, parse_peers
from slimvl.cli import commands as handlers
from slimvl.config import PRESET_NAMES
from slimvl.demo import N_ACCURACY
from slimvl.device.rules import parse_capability
from slimvl.device.spec import DEVICE_CHOICES, parse_simulated
from slimvl.models.loader import builtin_names
from slimvl.serve.limits import ServerLimits

T = TypeVar("T")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}, allowed: an integer >= {minimum}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"got {value}, allowed: an integer >= {minimum}")
        return value

    return parse


def _checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser that raises ValueError with the reason."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


_count = _at_least(0)
_positive_int = _at_least(1)
_capability = _checked(parse_capability)
_simulated_gpu = _checked(parse_simulated)
_peer_list = _checked(parse_peers)


def build_parser() -> argparse.ArgumentParser:
    # `--debug` is accepted before and after the subcommand; SUPPRESS keeps the subparser from
    # overwriting a `--debug` given before it.
    debug_after = argparse.ArgumentParser(add_help=False)
    debug_after.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    device_options = argparse.ArgumentParser(add_help=False)
    device_options.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where the model runs; auto: a CUDA GPU where one is usable (it says which), else the CPU",
    )
    device_options.add_argument(
        "--gpu-layers",
        type=_count,
        metavar="N",
        help="decoder layers on the GPU (the last N; default: as many as fit)",
    )
    device_options.add_argument(
        "--gpu-rules",
        type=_capability,
        metavar="MAJOR.MINOR",
        help="compute by another GPU's precision rules, e.g. 6.1 to check the Pascal path on a newer GPU",
    )

    parser = argparse.ArgumentParser(
        prog="slimvl", description="Run Qwen3-VL fast and small on a laptop CPU."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", parents=[debug_after, device_options], help="answer a question about images"
    )
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
    run.set_defaults(handler=handlers.cmd_run)

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
    optimize_cmd.set_defaults(handler=handlers.cmd_optimize)

    info = commands.add_parser(
        "info", parents=[debug_after, device_options], help="parameter counts, weight bytes, device placement"
    )
    info.add_argument("model", help=f"checkpoint directory or one of {', '.join(builtin_names())}")
    info.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.add_argument(
        "--simulate-gpu",
        type=_simulated_gpu,
        metavar="CAP:MEMORY",
        help="plan the placement for a GPU that is not here, e.g. 6.1:2GB (an MX250)",
    )
    info.set_defaults(handler=handlers.cmd_info)

    recipe = commands.add_parser("recipe", parents=[debug_after], help="show or list recipes")
    recipe_commands = recipe.add_subparsers(dest="recipe_command", required=True, metavar="ACTION")
    show = recipe_commands.add_parser("show", parents=[debug_after], help="print a recipe as YAML")
    show.add_argument("recipe", metavar="NAME|FILE")
    show.set_defaults(handler=handlers.cmd_recipe_show)
    listing = recipe_commands.add_parser("list", parents=[debug_after], help="the preset names")
    listing.set_defaults(handler=handlers.cmd_recipe_list)

    evaluate = commands.add_parser(
        "eval", parents=[debug_after, device_options], help="exact-match accuracy on synthetic VQA"
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
    evaluate.set_defaults(handler=handlers.cmd_eval)

    bench = commands.add_parser(
        "bench",
        parents=[debug_after, device_options],
        help="measure recipes and peers side by side (standard scenario)",
    )
    bench.add_argument("model", help=f"checkpoint directory or one of {', '.join(builtin_names())}")
    bench.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="FILE|NAME",
        help="a slimvl row: preset, recipe file or optimized directory (repeatable; default none; "
        "with --ablation, extra rows beside the ablation's)",
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
    bench.add_argument(
        "--ablation",
        action="store_true",
        help="each optimization's gain, measured: one at a time and cumulative, up to all (= laptop)",
    )
    bench.add_argument(
        "--accuracy-n", type=_positive_int, default=1000, metavar="N", help="ablation accuracy questions"
    )
    bench.set_defaults(handler=handlers.cmd_bench)

    export = commands.add_parser(
        "export", parents=[debug_after], help="write an optimized directory in another engine's format"
    )
    export.add_argument("model", help="an optimized directory (int8)")
    export.add_argument("--format", choices=("compressed-tensors",), required=True)
    export.add_argument(
        "-o", "--output", required=True, type=Path, help="output directory (written atomically)"
    )
    export.set_defaults(handler=handlers.cmd_export)

    serve = commands.add_parser(
        "serve",
        parents=[debug_after, device_options],
        help="serve the model over the OpenAI chat completions API",
    )
    serve.add_argument("model", help=f"checkpoint directory or one of {', '.join(builtin_names())}")
    serve.add_argument(
        "--recipe", metavar="FILE|NAME", help=f"recipe file or preset ({', '.join(PRESET_NAMES)})"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        help="require Authorization: Bearer KEY (default: $SLIMVL_API_KEY, else none)",
    )
    serve.add_argument(
        "--served-model-name", metavar="NAME", help="the model id clients send (default: MODEL)"
    )
    serve.add_argument(
        "--allowed-media-dir",
        type=Path,
        metavar="DIR",
        help="image_url may name files under DIR (default: none)",
    )
    serve.add_argument("--threads", type=_positive_int, metavar="T", help="torch intra-op threads")
    serve.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    for flag, default, meaning in (
        ("--max-queue", ServerLimits.max_queue, "requests waiting behind the running one (more get 503)"),
        ("--max-images", ServerLimits.max_images, "images per request"),
        ("--max-image-pixels", ServerLimits.max_image_pixels, "pixels of each image as sent"),
        ("--max-prompt-tokens", ServerLimits.max_prompt_tokens, "prompt tokens, image tokens included"),
        ("--max-tokens", ServerLimits.max_new_tokens, "largest (and default) max_tokens of a request"),
    ):
        serve.add_argument(
            flag, type=int, default=default, metavar="N", help=f"{meaning} (default {default})"
        )
    serve.set_defaults(handler=handlers.cmd_serve)

    demo = commands.add_parser("demo", parents=[debug_after], help="answer a few synthetic questions")
    demo.add_argument("--out", type=Path, help="where the demo images go (default: out/demo)")
    demo.add_argument(
        "--n",
        type=_positive_int,
        default=N_ACCURACY,
        metavar="N",
        help=f"accuracy questions (default {N_ACCURACY})",
    )
    demo.set_defaults(handler=handlers.cmd_demo)
    return parser
