"""In-process row runners used by `slimvl.bench.worker`: one model loaded once, then one request per call.

Each runner returns the metric table's per-run record, built from the monitor's `RequestMetrics`.
The `hf` runner times transformers' own `generate`: TTFT comes from a streamer whose second `put`
carries the first new token (the first carries the prompt), and the vision tower is timed by hooks, so
nothing runs twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from slimvl.api import load
from slimvl.bench.worker_protocol import Runner
from slimvl.config import Recipe
from slimvl.models.loader import load_model
from slimvl.models.preprocess import load_image
from slimvl.models.weights import decode_bytes_per_token, weight_bytes
from slimvl.monitor import EnergyMeter, RequestMonitor
from slimvl.monitor.metric_table import run_record


class SlimvlRunner:
    """slimvl's own pipeline with the row's recipe."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.weight_bytes = self.decode_weight_bytes = 0

    def load(self) -> None:
        recipe = Recipe.from_dict(self.spec["recipe"])
        placing = dict(self.spec.get("placing") or {})
        if placing.get("gpu_rules") is not None:
            placing["gpu_rules"] = tuple(placing["gpu_rules"])  # a list after JSON
        self.slim = load(
            self.spec["model"], recipe, dtype=self.spec["dtype"], threads=self.spec["threads"], **placing
        )
        self.weight_bytes = self.slim.pipeline.weight_bytes
        self.decode_weight_bytes = self.slim.pipeline.decode_bytes

    def run(self, image_path: str) -> dict[str, Any]:
        answer = self.slim.generate(
            [load_image(image_path)],
            self.spec["question"],
            max_new_tokens=self.spec["max_new_tokens"],
            ignore_eos=True,
        )
        return run_record(answer.metrics.to_dict())


class FirstTokenStreamer(BaseStreamer):
    """Records when `generate` emits its first new token (the second `put`; the first is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


class ModuleTimer:
    """Wall time spent inside a module's forward calls, via forward hooks."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *args: object) -> None:
        self._start = time.perf_counter()

    def _post(self, *args: object) -> None:
        self.seconds += time.perf_counter() - self._start


class HFRunner:
    """transformers' `Qwen3VLForConditionalGeneration.generate`, greedy, exactly N new tokens.

    Stages: preprocess; vision (hooked); prefill = first token time - preprocess - vision (so it holds
    generate's setup too, and preprocess + vision + prefill = TTFT); decode = first token to return.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.weight_bytes = self.decode_weight_bytes = 0

    def load(self) -> None:
        loaded = load_model(self.spec["model"], dtype=self.spec["dtype"])
        self.model, self.preprocessor = loaded.model, loaded.preprocessor
        if self.spec.get("quantize") == "torchao-int8":
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            quantize_(self.model.model.language_model, Int8WeightOnlyConfig())
        self.weight_bytes = weight_bytes(self.model)
        self.decode_weight_bytes = decode_bytes_per_token(self.model)
        self.vision_timer = ModuleTimer(self.model.model.visual)
        self.energy = EnergyMeter()

    @torch.inference_mode()
    def run(self, image_path: str) -> dict[str, Any]:
        image, max_new_tokens = load_image(image_path), self.spec["max_new_tokens"]
        streamer = FirstTokenStreamer()
        monitor = RequestMonitor(
            weight_bytes=self.weight_bytes,
            decode_weight_bytes_per_token=self.decode_weight_bytes,
            energy=self.energy,
        )
        self.vision_timer.seconds = 0.0
        with monitor:
            start = time.perf_counter()
            inputs = self.preprocessor([image], self.spec["question"])
            generate_at = time.perf_counter()
            output = self.model.generate(
                **inputs.model_kwargs(),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                streamer=streamer,
            )
            end = time.perf_counter()
        first = streamer.first_token_at if streamer.first_token_at is not None else end
        vision_s = self.vision_timer.seconds
        stages_ms = {
            "preprocess": (generate_at - start) * 1e3,
            "vision": vision_s * 1e3,
            "prefill": (first - generate_at - vision_s) * 1e3,
            "decode": (end - first) * 1e3,
        }
        metrics = monitor.metrics(
            new_tokens=int(output.shape[1] - inputs.input_ids.shape[1]),
            prompt_tokens=int(inputs.input_ids.shape[1]),
            visual_tokens=inputs.visual_tokens,
            visual_tokens_kept=inputs.visual_tokens,
        )
        return run_record(replace(metrics, stages_ms=stages_ms).to_dict())


RUNNERS: dict[str, Callable[[dict[str, Any]], Runner]] = {"slimvl": SlimvlRunner, "hf": HFRunner}
