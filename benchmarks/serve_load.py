"""`slimvl serve` under load, and its time to first streamed token against `slimvl run`'s.

    .venv/bin/python benchmarks/serve_load.py load --out benchmarks/results/serve_load_tiny.json
    .venv/bin/python benchmarks/serve_load.py ttft out/2b-int8 --out benchmarks/results/serve_ttft_2b_int8.json

`load`: a server process (`slimvl serve builtin:tiny`) on a free loopback port; each of `--questions`
test questions asked once in order (the sequential answers); then `--clients` clients at once, each
asking all of them `--rounds` times over in its own order. Every answer must be a 200 equal to the
sequential one, or a 503 (counted, retried after its Retry-After). The server's RSS is read after the
sequential pass (warm) and at the end.

`ttft`: a server on MODEL; `--runs` streamed requests (one 448 x 448 scene and its question) timed from
sending to the first event of the stream (sent when the first token is chosen), alternating with `slimvl run MODEL --json` on the same image and
question (its own time to first token), so both see the same phases of this VM's memory bandwidth.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from slimvl.atomic import write_text_atomic

SLIMVL = str(Path(sys.executable).with_name("slimvl"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, threads: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [SLIMVL, "serve", model, "--port", str(port), "--threads", str(threads)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def server_rss_mb(process: subprocess.Popen) -> float:
    """RSS of the server (the re-executed child, when the console script re-executes itself)."""
    proc = psutil.Process(process.pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 1e6


def data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chat_body(model: str, image_uri: str, question: str, max_tokens: int, stream: bool = False) -> dict:
    content = [{"type": "image_url", "image_url": {"url": image_uri}}, {"type": "text", "text": question}]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def load_test(args: argparse.Namespace) -> dict:
    from slimvl.data import examples

    scenes = list(examples("test", args.questions))
    bodies = [chat_body(args.model, data_uri(s.image), s.question, args.max_tokens) for s in scenes]
    port = free_port()
    server = start_server(args.model, port, args.threads)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        with httpx.Client(timeout=600) as client:
            sequential = [client.post(url, json=b).json()["choices"][0]["message"]["content"] for b in bodies]
        warm_rss = server_rss_mb(server)
        outcomes = {"answered": 0, "equal": 0, "busy_503": 0, "other": 0}
        lock = threading.Lock()
        latencies: list[float] = []

        def client_run(seed: int) -> None:
            order = [i for _ in range(args.rounds) for i in range(len(bodies))]
            random.Random(seed).shuffle(order)
            with httpx.Client(timeout=600) as client:
                for i in order:
                    while True:
                        started = time.perf_counter()
                        response = client.post(url, json=bodies[i])
                        with lock:
                            if response.status_code == 503:
                                outcomes["busy_503"] += 1
                            elif response.status_code == 200:
                                outcomes["answered"] += 1
                                text = response.json()["choices"][0]["message"]["content"]
                                outcomes["equal"] += text == sequential[i]
                                latencies.append(time.perf_counter() - started)
                            else:
                                outcomes["other"] += 1
                        if response.status_code != 503:
                            break
                        time.sleep(float(response.headers.get("Retry-After", "1")))

        started = time.perf_counter()
        threads = [threading.Thread(target=client_run, args=(seed,)) for seed in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        end_rss = server_rss_mb(server)
        healthy = httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
    requests = args.clients * args.rounds * len(bodies)
    return {
        "model": args.model,
        "clients": args.clients,
        "requests": requests,
        "outcomes": outcomes,
        "lost": requests - outcomes["answered"],
        "all_equal_to_sequential": outcomes["equal"] == outcomes["answered"] == requests,
        "wall_s": round(wall, 2),
        "requests_per_s": round(requests / wall, 2),
        "latency_s": {"median": round(statistics.median(latencies), 3), "max": round(max(latencies), 3)},
        "rss_mb": {
            "warm": round(warm_rss, 1),
            "end": round(end_rss, 1),
            "ratio": round(end_rss / warm_rss, 4),
        },
        "healthy_after": healthy,
    }


def ttft_test(args: argparse.Namespace) -> dict:
    from slimvl.data import make_example

    scene = make_example(2_000_000)
    body = chat_body(args.model, data_uri(scene.image), scene.question, args.max_tokens, stream=True)
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "scene.png"
        scene.image.save(image_path)
        port = free_port()
        server = start_server(args.model, port, args.threads)
        served, run, server_side, served_stages, run_stages = [], [], [], [], []
        try:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            for round_ in range(args.runs + 1):  # the first round of each is a warm-up
                started = time.perf_counter()
                first = None
                with httpx.stream("POST", url, json=body, timeout=600) as response:
                    for line in response.iter_lines():
                        if first is None and line.startswith("data: "):  # sent at the first token
                            first = time.perf_counter() - started
                        if line.startswith("data: ") and '"usage"' in line:
                            timings = json.loads(line[6:])["usage"]["slimvl"]
                            server_side.append(timings["ttft_ms"])
                            served_stages.append(timings["stages_ms"])
                body["stream_options"] = {"include_usage": True}
                out = subprocess.run(
                    [
                        SLIMVL,
                        "run",
                        args.model,
                        "--image",
                        str(image_path),
                        "--prompt",
                        scene.question,
                        "--max-new-tokens",
                        str(args.max_tokens),
                        "--threads",
                        str(args.threads),
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                run_record = json.loads(out.stdout)
                run_ttft = run_record["metrics"]["ttft_ms"]
                run_stages.append(run_record["stages_ms"])
                if round_ > 0:
                    served.append(first * 1e3)
                    run.append(run_ttft)
                print(f"round {round_}: served {first * 1e3:.0f} ms, run {run_ttft:.0f} ms", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    ratios = [s / r for s, r in zip(served, run, strict=True)]
    return {
        "model": args.model,
        "runs": args.runs,
        "threads": args.threads,
        "served_first_event_ms": _summary(served),
        "run_ttft_ms": _summary(run),
        "server_reported_ttft_ms": _summary(server_side[-args.runs :]) if server_side else None,
        "ratio_served_over_run": _summary(ratios, 4),
        "served_stages_ms": {
            k: _summary([s[k] for s in served_stages[-args.runs :]]) for k in served_stages[-1]
        },
        "run_stages_ms": {k: _summary([s[k] for s in run_stages[1:]]) for k in run_stages[-1]},
        "method": "client-side time from sending the streamed request to its first event, sent at the first token (HTTP, "
        "base64 image decode, queueing and the first token), against `slimvl run --json`'s ttft_ms, "
        "alternating, after one warm-up round of each",
    }


def _summary(values: list[float], digits: int = 1) -> dict:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load")
    load.add_argument("--model", default="builtin:tiny")
    load.add_argument("--clients", type=int, default=8)
    load.add_argument("--questions", type=int, default=25)
    load.add_argument("--rounds", type=int, default=1)
    load.add_argument("--max-tokens", type=int, default=16)
    ttft = commands.add_parser("ttft")
    ttft.add_argument("model")
    ttft.add_argument("--runs", type=int, default=5)
    ttft.add_argument("--max-tokens", type=int, default=8)
    for sub in (load, ttft):
        sub.add_argument("--threads", type=int, default=2)
        sub.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    record = load_test(args) if args.command == "load" else ttft_test(args)
    print(json.dumps(record, indent=1))
    write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
