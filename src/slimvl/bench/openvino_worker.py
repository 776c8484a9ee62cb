"""OpenVINO GenAI row worker, run by `.venv-openvino`'s interpreter (not by slimvl's).

It must not import slimvl: that virtualenv holds an older transformers. It loads slimvl's
standard-library-only modules by their paths instead: the JSON-lines protocol and its serve loop
(`worker_protocol.py`; its spec adds `model_dir`, the optimum-intel export, and `export_s`), the metric
table (`monitor/metric_table.py`: the per-run record) and the `/proc` readers (`procfs.py`).
Timings come from GenAI's own per-call perf metrics: TTFT (from the generate call, image processing and
vision included), time per output token (decode tok/s = 1000 / TPOT) and, where GenAI reports it, the
embeddings preparation (vision) time; prefill is not separable here and stays null. Peak RSS is the
kernel's VmHWM, reset before each run. Weight bytes are the export's `*.bin` files; bytes per decode
step are the language model's (lm_head included). Energy is not read here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import openvino as ov
import openvino_genai as ov_genai
from PIL import Image

_PACKAGE = Path(__file__).resolve().parents[1]  # src/slimvl


def _load_by_path(relative: str) -> ModuleType:
    """The module in `_PACKAGE / relative`, registered under its file's stem."""
    path = _PACKAGE / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look up their class's module while building it
    spec.loader.exec_module(module)
    return module


metric_table = _load_by_path("monitor/metric_table.py")
procfs = _load_by_path("procfs.py")
worker_protocol = _load_by_path("bench/worker_protocol.py")
megabytes = worker_protocol.megabytes


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
        procfs.reset_vm_hwm()  # where the kernel refuses, the peak covers the process lifetime, load included
        cpu0, start = time.process_time(), time.perf_counter()
        result = self.pipe.generate(self.spec["question"], images=[image], generation_config=self.config)
        e2e_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
        metrics = result.perf_metrics
        new_tokens = int(metrics.get_num_generated_tokens())
        tpot_ms = _mean_or_none(metrics, "get_tpot")
        decode_tok_s = 1000.0 / tpot_ms if tpot_ms and new_tokens > 1 else None
        return metric_table.run_record(
            {
                "vision_ms": _mean_or_none(metrics, "get_prepare_embeddings_duration"),
                "ttft_ms": _mean_or_none(metrics, "get_ttft"),
                "decode_tok_s": decode_tok_s,
                "e2e_s": e2e_s,
                "peak_rss_mb": megabytes(procfs.read_vm_hwm_bytes()),
                "cpu_s": cpu_s,
                "cpu_s_per_token": cpu_s / new_tokens if new_tokens else None,
                "achieved_gbps": self.decode_weight_bytes * decode_tok_s / 1e9 if decode_tok_s else None,
                "new_tokens": new_tokens,
                "prompt_tokens": int(metrics.get_num_input_tokens()),
            }
        )


def main() -> int:
    spec = json.loads(sys.argv[1])
    return worker_protocol.serve(
        lambda: OpenVINORunner(spec),
        spec["warmup_image"],
        worker_protocol.protocol_channel(),
        peak_rss_mb=lambda: megabytes(procfs.read_vm_hwm_bytes()),
        ready_fields=lambda: {
            "export_s": spec.get("export_s"),
            "huge_page_mb": megabytes(
                procfs.kb_field_bytes(Path("/proc/self/smaps_rollup"), "AnonHugePages")
            ),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
