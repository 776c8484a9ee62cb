"""OpenVINO GenAI row worker, run by `.venv-openvino`'s interpreter (not by slimvl's).

It must not import slimvl: that virtualenv holds an older transformers. It speaks the JSON-lines
protocol of `slimvl.bench.worker`; its spec adds `model_dir` (the optimum-intel export) and `export_s`.
Timings come from GenAI's own per-call perf metrics: TTFT (from the generate call, image processing and
vision included), time per output token (decode tok/s = 1000 / TPOT) and, where GenAI reports it, the
embeddings preparation (vision) time; prefill is not separable here and stays null. Peak RSS is the
kernel's VmHWM, reset before each run. Weight bytes are the export's `*.bin` files; bytes per decode
step are the language model's (lm_head included). Energy is not read here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino_genai as ov_genai
from PIL import Image


def _proc_mb(name: str, field: str) -> float | None:
    """The ``field: N kB`` line of ``/proc/self/<name>`` in MB (this worker cannot import slimvl's reader)."""
    try:
        text = Path("/proc/self", name).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    return None


def _vm_hwm_mb() -> float | None:
    return _proc_mb("status", "VmHWM")


def _anon_huge_mb() -> float | None:
    """``AnonHugePages`` of this process (OpenVINO asks for huge pages for some of its buffers itself)."""
    return _proc_mb("smaps_rollup", "AnonHugePages")


def _reset_vm_hwm() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the peak then covers the process lifetime, load included


def _mean_or_none(metrics: Any, getter: str) -> float | None:
    method = getattr(metrics, getter, None)
    if method is None:
        return None
    value = method()
    return float(getattr(value, "mean", value))


class OpenVINORunner:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        model_dir = Path(spec["model_dir"])
        self.weight_bytes = sum(p.stat().st_size for p in model_dir.glob("*.bin"))
        self.decode_weight_bytes = (model_dir / "openvino_language_model.bin").stat().st_size

    def load(self) -> None:
        properties = {"INFERENCE_NUM_THREADS": self.spec["threads"]}
        if self.spec.get("inference_precision"):
            properties["INFERENCE_PRECISION_HINT"] = self.spec["inference_precision"]
        self.pipe = ov_genai.VLMPipeline(self.spec["model_dir"], "CPU", **properties)
        self.config = ov_genai.GenerationConfig()
        self.config.max_new_tokens = self.spec["max_new_tokens"]
        self.config.min_new_tokens = self.spec["max_new_tokens"]
        self.config.ignore_eos = True
        self.config.do_sample = False
        self.config.pruning_ratio = self.spec.get("pruning_percent", 0)

    def run(self, image_path: str) -> dict[str, Any]:
        with Image.open(image_path) as im:
            image = ov.Tensor(np.array(im.convert("RGB"), dtype=np.uint8)[None])
        _reset_vm_hwm()
        cpu0, start = time.process_time(), time.perf_counter()
        result = self.pipe.generate(self.spec["question"], images=[image], generation_config=self.config)
        e2e_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
        metrics = result.perf_metrics
        new_tokens = int(metrics.get_num_generated_tokens())
        tpot_ms = _mean_or_none(metrics, "get_tpot")
        decode_tok_s = 1000.0 / tpot_ms if tpot_ms and new_tokens > 1 else None
        return {
            "vision_ms": _mean_or_none(metrics, "get_prepare_embeddings_duration"),
            "prefill_ms": None,
            "ttft_ms": _mean_or_none(metrics, "get_ttft"),
            "decode_tok_s": decode_tok_s,
            "e2e_s": e2e_s,
            "peak_rss_mb": _vm_hwm_mb(),
            "cpu_s": cpu_s,
            "cpu_s_per_token": cpu_s / new_tokens if new_tokens else None,
            "achieved_gbps": self.decode_weight_bytes * decode_tok_s / 1e9 if decode_tok_s else None,
            "energy_j": None,
            "energy_j_per_token": None,
            "new_tokens": new_tokens,
            "prompt_tokens": int(metrics.get_num_input_tokens()),
            "visual_tokens": None,
            "visual_tokens_kept": None,
        }


def main() -> int:
    spec = json.loads(sys.argv[1])
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        stream.write(json.dumps(message) + "\n")
        stream.flush()

    try:
        runner = OpenVINORunner(spec)
        start = time.perf_counter()
        runner.load()
        load_s = time.perf_counter() - start
        load_peak = _vm_hwm_mb()
        warmup = runner.run(spec["warmup_image"])
    except Exception as exc:  # the row's failure, reported to the parent: never hidden
        send({"event": "error", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]})
        return 1
    send(
        {
            "event": "ready",
            "load_s": load_s,
            "load_peak_rss_mb": load_peak,
            "export_s": spec.get("export_s"),
            "weight_bytes": runner.weight_bytes,
            "decode_weight_bytes": runner.decode_weight_bytes,
            "huge_page_mb": _anon_huge_mb(),
            "warmup": warmup,
        }
    )
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            return 0
        try:
            metrics = runner.run(command["image"])
        except Exception as exc:  # as above
            send({"event": "error", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]})
            return 1
        send({"event": "result", "index": command["index"], "metrics": metrics})
    return 0


if __name__ == "__main__":
    sys.exit(main())
