"""The handlers of the `slimvl` subcommands: each takes the parsed arguments and returns the exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from slimvl.api import SlimModel, load, optimize
from slimvl.bench.harness import BenchOptions, exit_code, run_bench, write_outputs
from slimvl.bench.printers import print_report
from slimvl.calibration import Calibration
from slimvl.cli.tables import accuracy_table, precision_table, pruning_table, stage_table, weights_table
from slimvl.config import PRESET_NAMES, Recipe, resolve_recipe
from slimvl.data import examples
from slimvl.demo import run_demo
from slimvl.device import plan_device
from slimvl.errors import InputError
from slimvl.eval import evaluate, next_token_agreement, paired_difference
from slimvl.memory import freeze_loaded_objects
from slimvl.models.preprocess import load_image
from slimvl.models.weights import decode_bytes_per_token, weight_table
from slimvl.monitor import RequestMetrics
from slimvl.serve.limits import ServerLimits


def _placing(args: argparse.Namespace) -> dict[str, Any]:
    """`load`'s device arguments from `--device`, `--gpu-layers` and `--gpu-rules`."""
    return {"device": args.device, "gpu_layers": args.gpu_layers, "gpu_rules": args.gpu_rules}


def _say_device(slim: SlimModel) -> None:
    """What `--device` chose, and where the parts went when a GPU holds any (stderr: not in the output)."""
    plan = slim.device
    text = plan.choice
    if plan.placement.on_gpu:
        text += f"; {plan.placement.describe()}; {plan.rules.describe()}"
    print(f"slimvl: {text}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    # Cheap checks first: a bad prompt, image or recipe fails before the model loads (`load` checks
    # that the recipe's optimizations are built before it loads the model).
    if not args.prompt.strip():
        raise InputError("the prompt is empty")
    images = [load_image(path) for path in args.image]
    slim = load(
        args.model, resolve_recipe(args.recipe), dtype=args.dtype, threads=args.threads, **_placing(args)
    )
    _say_device(slim)
    freeze_loaded_objects()
    recipe = slim.recipe  # an optimized directory brings its own
    answer = slim.generate(images, args.prompt, max_new_tokens=args.max_new_tokens)
    metrics = answer.metrics
    if args.json:
        print(json.dumps(_run_record(args.model, recipe, answer.text, metrics)))
        return 0
    print(answer.text)
    Console(highlight=False).print(stage_table(metrics, title=escape(f"{args.model} · recipe {recipe.name}")))
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


def cmd_export(args: argparse.Namespace) -> int:
    from slimvl.export.compressed_tensors import export_compressed_tensors

    out = export_compressed_tensors(args.model, args.output)
    print(f"wrote {out} (compressed-tensors, int8)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the model once and serve it until interrupted."""
    import uvicorn

    from slimvl.serve.app import create_app
    from slimvl.serve.engine import model_thread

    limits = ServerLimits(
        max_queue=args.max_queue,
        max_images=args.max_images,
        max_image_pixels=args.max_image_pixels,
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_tokens,
    )
    if args.allowed_media_dir is not None and not args.allowed_media_dir.is_dir():
        raise InputError(f"--allowed-media-dir: {args.allowed_media_dir} is not a directory")
    if not 0 < args.port < 65536:
        raise InputError(f"--port: got {args.port}, allowed: 1..65535")
    executor = model_thread()
    recipe = resolve_recipe(args.recipe)
    slim = executor.submit(
        load, args.model, recipe, dtype=args.dtype, threads=args.threads, **_placing(args)
    ).result()
    _say_device(slim)
    freeze_loaded_objects()
    app = create_app(
        slim,
        args.served_model_name or args.model,
        limits,
        api_key=args.api_key or os.environ.get("SLIMVL_API_KEY") or None,
        allowed_media_dir=args.allowed_media_dir,
        executor=executor,
    )
    print(
        f"slimvl: serving {args.model} (recipe {slim.recipe.name}) at http://{args.host}:{args.port}/v1",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    if args.calib is not None and not args.calib.is_dir():
        raise InputError(f"calibration directory not found: {args.calib}")
    recipe = resolve_recipe(args.recipe)
    out = optimize(args.model, recipe, args.output, calibration=Calibration(args.calib))
    print(f"wrote {out} (recipe {recipe.name})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if args.simulate_gpu is None:
        slim = load(args.model, dtype=args.dtype, **_placing(args))
        device = slim.device
    else:  # planned for the simulated GPU; nothing is moved
        slim = load(args.model, dtype=args.dtype)
        device = plan_device(slim.loaded.model, "cuda", args.gpu_layers, args.gpu_rules, [args.simulate_gpu])
    model = slim.loaded.model
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
        "plans": slim.plans,
        "device": device.to_dict(),
    }
    if args.json:
        print(json.dumps(record))
        return 0
    console = Console(highlight=False)
    console.print(weights_table(escape(f"{args.model} weights"), groups, by_dtype, total))
    console.print(f"weight bytes read per decode step: {record['decode_bytes_per_token'] / 1e6:.2f} MB")
    if "pruning" in slim.plans:
        console.print(pruning_table(slim.plans["pruning"]))
    if "adaptive_precision" in slim.plans:
        console.print(precision_table(slim.plans["adaptive_precision"]))
    console.print(escape(f"{device.choice}; {device.placement.describe()}"))
    if device.rules is not None:
        console.print(escape(device.rules.describe()))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    compare = args.baseline is not None
    baseline_recipe = resolve_recipe(args.baseline) if compare else None
    slim = load(args.model, resolve_recipe(args.recipe), threads=args.threads, **_placing(args))
    _say_device(slim)
    recipe = slim.recipe
    questions = list(examples(args.split, args.n))
    result = evaluate(slim, blind=args.blind, keep_logprobs=compare, questions=questions, split=args.split)
    record = {"model": args.model, "recipe": recipe.name, **result.to_dict()}
    if compare:
        del slim
        reference = load(args.model, baseline_recipe, threads=args.threads, **_placing(args))
        base = evaluate(
            reference, blind=args.blind, keep_logprobs=True, questions=questions, split=args.split
        )
        record["baseline"] = {"recipe": baseline_recipe.name, **base.to_dict()}
        record["paired_difference"] = paired_difference(base, result)
        record["next_token"] = next_token_agreement(base, result)
    if args.json:
        print(json.dumps(record))
        return 0
    title = escape(f"{args.model} · recipe {recipe.name} · {args.split} · n={result.n}")
    Console(highlight=False).print(accuracy_table(title, result, record["majority_baseline"]))
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


def cmd_recipe_show(args: argparse.Namespace) -> int:
    print(resolve_recipe(args.recipe).to_yaml(), end="")
    return 0


def cmd_recipe_list(args: argparse.Namespace) -> int:
    print("\n".join(PRESET_NAMES))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
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
        placing=_placing(args),
    )
    report = run_bench(options)
    print_report(report)
    write_outputs(report, json_out=args.json_out, md_out=args.md_out, plot=args.plot)
    return exit_code(report)


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(out_dir=args.out, accuracy_n=args.n)
