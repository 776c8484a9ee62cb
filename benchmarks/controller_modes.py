"""The run-time controller under simulated machine states on builtin:tiny: CPU-seconds per request,
wall time and accuracy in each state's mode, paired against the normal state on the same questions,
and the controller's decision time. The state source is replaced by a fixed simulated state per row;
everything else (the model, the hooks, the pipeline) is what runs.

    .venv/bin/python benchmarks/controller_modes.py --n 1000 --out benchmarks/results/controller_modes_tiny.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

GIB = 2**30
STATES = {
    "normal": {},
    "on_battery_low": {"on_battery": True, "battery_percent": 12.0},
    "hot": {"temperature_c": 96.0},
    "low_memory": {"available_memory_bytes": 600 * 2**20},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--recipe", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    import slimvl
    from slimvl.atomic import write_text_atomic
    from slimvl.config import resolve_recipe
    from slimvl.data import examples
    from slimvl.eval import evaluate, next_token_agreement, paired_difference
    from slimvl.precision.machine_state import MachineState
    from slimvl.precision.runtime import controlled

    torch.set_num_threads(args.threads)
    slim = slimvl.load("builtin:tiny", resolve_recipe(args.recipe), threads=args.threads)
    questions = list(examples(args.split, args.n))
    calm = MachineState(
        available_memory_bytes=16 * GIB,
        on_battery=False,
        battery_percent=95.0,
        temperature_c=55.0,
        critical_temperature_c=100.0,
        cpu_load=0.1,
        cpu_freq_ratio=1.0,
        logical_cpus=args.threads,
    )

    class Recording:
        """The model, with each answer's metrics kept."""

        def __init__(self) -> None:
            self.metrics = []

        def generate(self, *a, **k):
            answer = slim.generate(*a, **k)
            self.metrics.append(answer.metrics)
            return answer

    record = {
        "model": "builtin:tiny",
        "recipe": args.recipe,
        "n": args.n,
        "threads": args.threads,
        "rows": [],
    }
    results = {}
    for name, changes in STATES.items():
        state = MachineState(**{**calm.__dict__, **changes})
        slim.pipeline.hooks = controlled(
            slim.loaded, slim.pipeline.weight_bytes, 512, state_source=lambda s=state: s, threads=args.threads
        )
        recording = Recording()
        evaluate(recording, keep_logprobs=True, questions=questions[:20])  # warm-up
        recording = Recording()
        result = evaluate(recording, keep_logprobs=True, questions=questions)
        results[name] = result
        metrics = recording.metrics
        row = {
            "state": name,
            "simulated": changes,
            "mode": metrics[0].mode,
            "accuracy": result.accuracy,
            "cpu_s_median": statistics.median(m.cpu_s for m in metrics),
            "cpu_s_total": sum(m.cpu_s for m in metrics),
            "wall_s_median": statistics.median(m.wall_s for m in metrics),
            "visual_tokens_kept_mean": statistics.mean(m.visual_tokens_kept for m in metrics),
            "visual_tokens_mean": statistics.mean(m.visual_tokens for m in metrics),
            "decision_ms_median": statistics.median(m.mode["decision_ms"] for m in metrics),
            "decision_ms_max": max(m.mode["decision_ms"] for m in metrics),
        }
        if name != "normal":
            base = record["rows"][0]
            row["cpu_s_ratio"] = row["cpu_s_total"] / base["cpu_s_total"]
            row["paired_difference"] = paired_difference(results["normal"], result)
            row["next_token"] = next_token_agreement(results["normal"], result)
        record["rows"].append(row)
        print(
            f"{name:15s} {row['mode']['name']:15s} acc {result.accuracy:.3f} cpu {row['cpu_s_median'] * 1e3:.1f} ms "
            f"(ratio {row.get('cpu_s_ratio', 1):.3f}) wall {row['wall_s_median'] * 1e3:.1f} ms "
            f"tokens {row['visual_tokens_kept_mean']:.1f}/{row['visual_tokens_mean']:.1f} "
            f"decide {row['decision_ms_median']:.3f} ms {row.get('paired_difference', '')}",
            flush=True,
        )
    write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
