"""The JSON-lines protocol between the bench driver and a row's worker process, and the loop that serves it.

Protocol:
- argv[1] is the worker spec (a JSON object: kind, model, dtype, recipe, quantize, threads, question,
  max_new_tokens, warmup_image; the OpenVINO worker's adds model_dir and export_s);
- the worker answers `{"event": "ready", "load_s", "load_peak_rss_mb", "weight_bytes",
  "decode_weight_bytes", ..., "huge_page_mb", "warmup"}` or `{"event": "error", "error"}` on stdout
  (`...`: `cpu_capability` from slimvl's worker, `export_s` from the OpenVINO one);
- then per stdin line `{"cmd": "run", "index": i, "image": path}` it answers
  `{"event": "result", "index": i, "metrics": {...}}` (or an error, and exits); `{"cmd": "quit"}` ends it.
Anything else the process prints (C libraries included) goes to stderr, never into the protocol.

Standard library only: the OpenVINO worker, which runs without slimvl, loads this file by its path.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

Send = Callable[[dict[str, Any]], None]


class Runner(Protocol):
    """One row's model: loaded once, then one measured request per image file."""

    weight_bytes: int
    decode_weight_bytes: int

    def load(self) -> None: ...

    def run(self, image_path: str) -> dict[str, Any]:
        """The run's per-run record (the metric table's `run_record`)."""


def megabytes(size: int | None) -> float | None:
    """The protocol's sizes are MB (1e6 bytes); None stays None (not measurable here)."""
    return None if size is None else size / 1e6


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


def serve(
    make_runner: Callable[[], Runner],
    warmup_image: str,
    send: Send,
    *,
    peak_rss_mb: Callable[[], float | None],
    ready_fields: Callable[[], dict[str, Any]],
) -> int:
    """Build and load the runner, warm it up, answer `ready`, then one run per command until `quit`.

    `peak_rss_mb` is read right after loading; `ready_fields` (what else the ready message carries)
    after the warm-up. A failure is the row's, reported to the parent as one `error` line: never hidden.
    """
    try:
        runner = make_runner()
        start = time.perf_counter()
        runner.load()
        load_s = time.perf_counter() - start
        load_peak = peak_rss_mb()
        warmup = runner.run(warmup_image)
        extra = ready_fields()
    except Exception as exc:
        send({"event": "error", "error": one_line(exc)})
        return 1
    send(
        {
            "event": "ready",
            "load_s": load_s,
            "load_peak_rss_mb": load_peak,
            "weight_bytes": runner.weight_bytes,
            "decode_weight_bytes": runner.decode_weight_bytes,
            **extra,
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
            send({"event": "error", "error": one_line(exc)})
            return 1
        send({"event": "result", "index": command["index"], "metrics": metrics})
    return 0
