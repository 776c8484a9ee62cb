"""`slimvl bench`: build the rows, measure the read bandwidth, drive the workers, assemble the record."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from slimvl.atomic import write_text_atomic
from slimvl.bench import ablation as ablation_mod
from slimvl.bench.driver import MEMORY_MARGIN_BYTES, Progress, RowResult, available_bytes, run_interleaved
from slimvl.bench.memory_plan import estimated_peak_bytes
from slimvl.bench.plot import write_plot
from slimvl.bench.printers import markdown
from slimvl.bench.profiles import Profile, get_profile
from slimvl.bench.report import build_report, succeeded
from slimvl.bench.rows import (
    RowSpec,
    check_unique_names,
    not_built,
    not_runnable_reason,
    peer_row,
    slimvl_row,
    worker_argv,
)
from slimvl.bench.scenario import Scenario
from slimvl.config import preset, resolve_recipe
from slimvl.device.spec import cuda_devices
from slimvl.errors import ModelLoadError
from slimvl.hugepages import huge_page_env
from slimvl.models.loader import BUILTIN_PREFIX, builtin_names, read_checkpoint_config
from slimvl.monitor import EnergyMeter, machine_info, measure_read_bandwidth
from slimvl.monitor.sampler import usable_cpus
from slimvl.optimized import is_optimized_dir, read_manifest

DEFAULT_BANDWIDTH_BYTES = 2 * 1024**3


@dataclass
class BenchOptions:
    model: str
    # preset names, recipe files or optimized directories; none (and no ablation): ["none"]
    recipes: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    runs: int = 5
    threads: int | None = None  # None: the physical cores this process may use
    profile: str = "native"
    max_new_tokens: int = 64
    bandwidth_bytes: int = DEFAULT_BANDWIDTH_BYTES
    ablation: bool = False
    accuracy_n: int = 1000
    # slimvl rows' `load` device arguments (device, gpu_layers, gpu_rules); peers run where they run
    placing: dict[str, Any] = field(default_factory=lambda: {"device": "cpu"})


class BandwidthSamples:
    """The read bandwidth, measured before the runs and again before every round of them where memory
    allows: each run's share of it is taken against the sample measured just before its round, since
    these VMs' bandwidth drifts by a third within minutes (36 and 55 GB/s ten minutes apart)."""

    def __init__(self, size_bytes: int, threads: int) -> None:
        self.size_bytes, self.threads = size_bytes, threads
        self.first = measure_read_bandwidth(size_bytes, threads=threads)
        self.samples = [self.first.gbps]

    def before_round(self) -> dict[str, Any]:
        if available_bytes() < self.size_bytes + MEMORY_MARGIN_BYTES:
            return {}  # the runs take the median of the other samples
        gbps = measure_read_bandwidth(self.size_bytes, threads=self.threads).gbps
        self.samples.append(gbps)
        return {"read_bandwidth_gbps": gbps}

    def machine_fields(self) -> dict[str, Any]:
        return {
            "read_bandwidth_gbps": statistics.median(self.samples),
            "read_bandwidth": {
                "method": self.first.method,
                "size_bytes": self.first.size_bytes,
                "threads": self.first.threads,
                "per_method_gbps": self.first.per_method,
                "samples_gbps": list(self.samples),
            },
        }


def stderr_progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def default_threads() -> int:
    usable = usable_cpus()
    return min(usable, psutil.cpu_count(logical=False) or usable)


def check_model(model: str) -> None:
    """Fail before anything is measured on a model reference that cannot exist."""
    if not model.startswith(BUILTIN_PREFIX):
        read_checkpoint_config(Path(model))
    elif model not in builtin_names():
        raise ModelLoadError(f"unknown model '{model}', builtin models: {', '.join(builtin_names())}")


def bench_rows(options: BenchOptions) -> list[RowSpec]:
    check_model(options.model)
    extra = [_recipe_row(options.model, recipe) for recipe in options.recipes]
    peers = [peer_row(options.model, peer) for peer in options.peers]
    if options.ablation:
        first, later = ablation_mod.ablation_rows(options.model)
        rows = [*first, *extra, *peers, *later]
    else:
        rows = [*(extra or [_recipe_row(options.model, "none")]), *peers]
    check_unique_names(rows)
    if get_profile(options.profile).env:
        for row in rows:
            if row.kind == "openvino":
                row.notes.append("native ISA: OpenVINO cannot be capped by the profile")
    return rows


def _recipe_row(model: str, recipe: str) -> RowSpec:
    """A preset or recipe file applied to MODEL at load, or a directory written by `slimvl optimize`."""
    path = Path(recipe)
    if is_optimized_dir(path):
        saved = read_manifest(path)["recipe_obj"]
        return slimvl_row(str(path), preset("none"), name=f"slimvl:{saved.name}@{path.name}")
    return slimvl_row(model, resolve_recipe(recipe))


def initial_result(row: RowSpec) -> RowResult:
    """A row's status before anything runs: not built, not runnable, or ok (to be run)."""
    missing = not_built(row)
    if missing:
        return RowResult(row, status="not built", error=f"missing: {', '.join(missing)}")
    reason = not_runnable_reason(row)
    if reason:
        return RowResult(row, status="not runnable", error=reason)
    return RowResult(row)


def worker_env(threads: int, profile: Profile) -> dict[str, str]:
    """The environment of every row's worker, peers included: fixed thread counts, the profile's caps,
    and huge pages for the heap (`slimvl.hugepages`) where the machine gives them only on request, so
    that no row is measured with 4 KB pages beside another with 2 MB ones."""
    env = huge_page_env(os.environ)
    env.update(
        {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    )
    env.update(profile.env)
    return env


def run_bench(options: BenchOptions, progress: Progress = stderr_progress) -> dict[str, Any]:
    profile = get_profile(options.profile)
    threads = options.threads or default_threads()
    scenario = Scenario(max_new_tokens=options.max_new_tokens)
    results = [initial_result(row) for row in bench_rows(options)]
    progress(f"measuring read bandwidth over {options.bandwidth_bytes / 1e6:.0f} MB with {threads} threads")
    bandwidth = BandwidthSamples(options.bandwidth_bytes, threads)
    energy = EnergyMeter()
    energy_note = (
        energy.note
        if energy.available
        else f"not measurable here ({energy.reason}); CPU-s/token is the proxy"
    )
    env = worker_env(threads, profile)
    with tempfile.TemporaryDirectory(prefix="slimvl-bench-") as tmp:
        images = scenario.write_images(Path(tmp), options.runs)

        def launch(row: RowSpec) -> tuple[list[str], dict[str, str]]:
            spec = {
                **row.to_dict(),
                "threads": threads,
                "question": scenario.question,
                "max_new_tokens": scenario.max_new_tokens,
                "warmup_image": str(images[0]),
                "placing": options.placing,
            }
            return worker_argv(row, spec), env

        run_order, notes = run_interleaved(
            results,
            launch,
            images,
            progress,
            Path(tmp),
            need=estimated_peak_bytes,
            before_round=bandwidth.before_round,
        )
    machine = {
        **machine_info(),
        **bandwidth.machine_fields(),
        "gpus": [gpu.describe() for gpu in cuda_devices()],
    }
    report = build_report(
        model=options.model,
        scenario=scenario.to_dict(options.runs),
        runs=options.runs,
        threads=threads,
        profile={"name": profile.name, "env": profile.env, "notes": list(profile.notes)},
        machine=machine,
        energy_note=energy_note,
        results=results,
        run_order=run_order,
        notes=notes,
    )
    report["placing"] = options.placing
    if options.ablation:
        evaluations, report["accuracy_note"] = ablation_mod.measure_accuracy(
            results, options.accuracy_n, threads, progress
        )
        report["accuracy_n"] = options.accuracy_n
        report["ablation"] = ablation_mod.ablation_table(report, evaluations)
    return report


def write_outputs(
    report: dict[str, Any], json_out: Path | None = None, md_out: Path | None = None, plot: Path | None = None
) -> None:
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report, indent=2) + "\n")
    if md_out is not None:
        write_text_atomic(md_out, markdown(report))
    if plot is not None:
        write_plot(report, plot)


def exit_code(report: dict[str, Any], progress: Progress = stderr_progress) -> int:
    """0 when at least one row ran; every row that did not is named on stderr."""
    for row in report["rows"]:
        if row["status"] != "ok":
            progress(f"{row['name']}: {row['status']}: {row['error']}")
    return 0 if succeeded(report) else 1
