"""Drive one worker process per row and interleave their runs: A B C A B C ...

Interleaving spreads the machine's drift (up to 30% between passes on small machines) over every row
instead of favouring the row that ran first. Workers start one at a time (load + warm-up) and stay
alive, idle between their runs, as many together as memory allows (rows that do not fit run in a later
wave); a worker that fails marks its row failed and the others go on.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from slimvl.bench.rows import RowSpec

Progress = Callable[[str], None]
Launch = Callable[[RowSpec], tuple[list[str], dict[str, str]]]  # row -> (argv, environment)


@dataclass
class RowResult:
    spec: RowSpec
    status: str = "ok"  # "ok", "failed", "not runnable" or "not built"
    error: str | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)  # per run: metrics + "run" + "seq"

    def fail(self, error: str) -> None:
        self.status, self.error = "failed", error


class WorkerError(RuntimeError):
    """A worker reported an error or died; the message is one line."""


class WorkerProcess:
    """One row's process, spoken to in JSON lines (see `slimvl.bench.worker_protocol`)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # closed in close()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, text=True
        )

    def _receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # not a protocol line
            if message.get("event") == "error":
                raise WorkerError(message.get("error") or "unknown worker error")
            return message
        raise WorkerError(self._death_note())

    def _death_note(self) -> str:
        code = self.proc.wait()
        self._log.flush()
        lines = [
            line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()
        ]
        return f"worker exited with code {code}" + (f": {lines[-1][:500]}" if lines else "")

    def wait_ready(self) -> dict[str, Any]:
        return self._receive()

    def run(self, index: int, image: Path) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": "run", "index": index, "image": str(image)}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._death_note()) from None
        return self._receive()["metrics"]

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass  # already gone
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


MEMORY_MARGIN_BYTES = 1_000_000_000  # the runs' transient activations and the parent process


def _resident_bytes(workers: dict[str, WorkerProcess]) -> int:
    resident = 0
    for worker in workers.values():
        try:
            resident += psutil.Process(worker.proc.pid).memory_info().rss
        except psutil.Error:
            continue  # a worker that just died holds no memory
    return resident


def _memory_note(wave: int, workers: dict[str, WorkerProcess]) -> str:
    memory = psutil.virtual_memory()
    note = (
        f"wave {wave}: {', '.join(workers)} resident together: {_resident_bytes(workers) / 1e9:.2f} GB; "
        f"{memory.available / 1e9:.2f} GB of {memory.total / 1e9:.2f} GB available"
    )
    if memory.available < 0.1 * memory.total:
        note += " (little memory left: idle workers may be swapped out, which distorts interleaved timings)"
    return note


def available_bytes() -> int:
    return psutil.virtual_memory().available


def _start(
    result: RowResult, number: int, launch: Launch, log_dir: Path, progress: Progress
) -> WorkerProcess | None:
    """The row's ready worker, or None with the row marked failed."""
    name = result.spec.name
    progress(f"{name}: starting (load + 1 warm-up run)")
    worker = None
    try:
        argv, env = launch(result.spec)
        worker = WorkerProcess(argv, env, log_dir / f"worker-{number}.log")
        result.ready = worker.wait_ready()
    except Exception as exc:  # any failure to start is this row's, reported in its status
        result.fail(str(exc) if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}")
        progress(f"{name}: failed: {result.error}")
        if worker is not None:
            worker.close()
        return None
    progress(f"{name}: ready, loaded in {result.ready.get('load_s', 0.0):.1f} s")
    return worker


def run_interleaved(
    results: Sequence[RowResult],
    launch: Launch,
    images: Sequence[Path],
    progress: Progress,
    log_dir: Path,
    need: Callable[[RowSpec], int] = lambda _row: 0,
    available: Callable[[], int] = available_bytes,
    before_round: Callable[[], dict[str, Any]] = dict,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Start a worker per runnable row, then run `images[1:]` in rounds; `images[0]` is the warm-up.

    Workers stay resident together as long as memory allows: a row whose estimated peak (`need`) does
    not fit in the memory still available beside the running workers waits for a later wave, which
    starts once the current wave's runs are done and its workers have exited. Runs interleave within a
    wave, each round starting one row further (A1 B1 C1, B2 C2 A2, C3 A3 B3, ...), so that a row's place
    in the round does not bias the ratios between rows; the notes say which rows shared one.

    `before_round` runs before each round; what it returns is added to every run record of the round
    (the harness samples the read bandwidth there, so each run is compared with one measured beside it).

    Every run record carries its `wave` (1, 2, ...): only runs of one wave and round ran side by side.

    Returns the order in which runs happened (`seq`, `row`, `run`) and notes for the report.
    """
    order: list[dict[str, Any]] = []
    notes: list[str] = []
    numbers = {id(result): number for number, result in enumerate(results)}
    pending = [result for result in results if result.status == "ok"]
    while pending:
        workers: dict[str, WorkerProcess] = {}
        try:
            waiting = []
            for result in pending:
                if workers and need(result.spec) + MEMORY_MARGIN_BYTES > available():
                    waiting.append(result)
                    continue
                worker = _start(result, numbers[id(result)], launch, log_dir, progress)
                if worker is not None:
                    workers[result.spec.name] = worker
            pending = waiting
            if waiting:
                progress(
                    f"not enough memory beside {', '.join(workers)}: later wave for "
                    f"{', '.join(r.spec.name for r in waiting)}"
                )
            if workers:
                notes.append(_memory_note(len(notes) + 1, workers))
            _run_rounds(results, workers, images, order, progress, before_round, wave=len(notes))
        finally:
            for worker in workers.values():
                worker.close()
    return order, notes


def rotated(rows: Sequence[RowResult], shift: int) -> list[RowResult]:
    """`rows` starting at `shift` (mod their number): round k starts with the k-th row, so no row always
    runs first after the round's bandwidth sample or always right after the same neighbour."""
    if not rows:
        return []
    shift %= len(rows)
    return [*rows[shift:], *rows[:shift]]


def _run_rounds(
    results: Sequence[RowResult],
    workers: dict[str, WorkerProcess],
    images: Sequence[Path],
    order: list[dict[str, Any]],
    progress: Progress,
    before_round: Callable[[], dict[str, Any]],
    wave: int,
) -> None:
    wave_rows = [result for result in results if result.spec.name in workers]
    for run in range(1, len(images)):
        round_info = before_round() if workers else {}
        for result in rotated(wave_rows, run - 1):
            name = result.spec.name
            if result.status != "ok":
                continue
            seq = len(order)
            order.append({"seq": seq, "row": name, "run": run})
            try:
                metrics = workers[name].run(run, images[run])
            except WorkerError as exc:
                result.fail(str(exc))
                progress(f"{name}: run {run} failed: {exc}")
                continue
            result.runs.append({"run": run, "seq": seq, "wave": wave, **metrics, **round_info})
            progress(f"{name}: run {run}/{len(images) - 1}: {metrics.get('e2e_s') or 0:.2f} s end to end")
