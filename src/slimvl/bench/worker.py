"""A bench row's own process: load the model once, warm up once, then one measured run per command.

Own process, so that the row's peak RSS and load time are its own. Protocol, JSON lines:
- argv[1] is the worker spec (a JSON object: kind, model, dtype, recipe, quantize, threads, question,
  max_new_tokens, warmup_image);
- the worker answers `{"event": "ready", "load_s", "load_peak_rss_mb", "weight_bytes",
  "decode_weight_bytes", "cpu_capability", "warmup"}` or `{"event": "error", "error"}` on stdout;
- then per stdin line `{"cmd": "run", "index": i, "image": path}` it answers
  `{"event": "result", "index": i, "metrics": {...}}` (or an error, and exits); `{"cmd": "quit"}` ends it.
Anything else the process prints (C libraries included) goes to stderr, never into the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import transformers.utils.logging as hf_logging

from slimvl.bench.runners import RUNNERS
from slimvl.hugepages import huge_page_bytes
from slimvl.models.preprocess import load_image
from slimvl.monitor.sampler import read_vm_hwm_bytes

Send = Callable[[dict[str, Any]], None]


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def protocol_channel() -> Send:
    """Keep the real stdout for protocol messages and point fd 1 (and `sys.stdout`) at stderr."""
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        stream.write(json.dumps(message) + "\n")
        stream.flush()

    return send


def serve(spec: dict[str, Any], send: Send) -> int:
    question, max_new_tokens = spec["question"], spec["max_new_tokens"]
    try:
        runner = RUNNERS[spec["kind"]](spec)
        start = time.perf_counter()
        runner.load()
        load_s = time.perf_counter() - start
        load_peak = read_vm_hwm_bytes()
        warmup = runner.run(load_image(spec["warmup_image"]), question, max_new_tokens)
        huge = huge_page_bytes()
    except Exception as exc:  # the row's failure, reported to the parent: never hidden
        send({"event": "error", "error": one_line(exc)})
        return 1
    send(
        {
            "event": "ready",
            "load_s": load_s,
            "load_peak_rss_mb": None if load_peak is None else load_peak / 1e6,
            "weight_bytes": runner.weight_bytes,
            "decode_weight_bytes": runner.decode_weight_bytes,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "huge_page_mb": None if huge is None else huge / 1e6,
            "warmup": warmup,
        }
    )
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            return 0
        try:
            metrics = runner.run(load_image(command["image"]), question, max_new_tokens)
        except Exception as exc:  # as above: the parent reports it
            send({"event": "error", "error": one_line(exc)})
            return 1
        send({"event": "result", "index": command["index"], "metrics": metrics})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    send = protocol_channel()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(spec["threads"])
    return serve(spec, send)


if __name__ == "__main__":
    sys.exit(main())
