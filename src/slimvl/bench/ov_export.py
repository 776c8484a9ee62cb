"""Parent-side glue for the OpenVINO GenAI peers: their virtualenv, the cached export, the worker command.

OpenVINO runs in its own virtualenv (`scripts/setup_openvino.sh`): optimum-intel pins an older
transformers than slimvl's. Nothing here imports openvino; the worker (`openvino_worker.py`) runs with
that venv's interpreter and speaks the JSON-lines protocol of `slimvl.bench.worker_protocol`. (No
module beside that script may be named like a package it imports: its folder comes first on its
`sys.path`.)
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from slimvl.models.checkpoint import save_checkpoint
from slimvl.models.loader import BUILTIN_PREFIX, load_model, tiny_path

SETUP_HINT = "run scripts/setup_openvino.sh"
WORKER_SCRIPT = Path(__file__).with_name("openvino_worker.py")
_PROJECT_ROOT = Path(__file__).resolve().parents[3]  # where an editable install's checkout lies


def venv_dir() -> Path:
    """`$SLIMVL_OPENVINO_VENV`, else `.venv-openvino` in the working directory, else in the checkout."""
    if "SLIMVL_OPENVINO_VENV" in os.environ:
        return Path(os.environ["SLIMVL_OPENVINO_VENV"])
    here = Path.cwd() / ".venv-openvino"
    return here if here.is_dir() else _PROJECT_ROOT / ".venv-openvino"


def not_runnable_reason() -> str | None:
    python = venv_dir() / "bin" / "python"
    return None if python.is_file() else f"{venv_dir()} not found: {SETUP_HINT}"


def cache_dir() -> Path:
    return Path(os.environ.get("SLIMVL_CACHE", Path.home() / ".cache" / "slimvl"))


def checkpoint_dir(model_ref: str) -> Path:
    """A checkpoint directory for `model_ref`; a builtin shape is written once (bf16) into the cache.

    The random weights of a builtin shape are seeded, so the export holds the same weights (rounded to
    bf16, as real checkpoints ship) as the `hf-*` rows load.
    """
    if not model_ref.startswith(BUILTIN_PREFIX):
        return Path(model_ref).resolve()
    if model_ref == f"{BUILTIN_PREFIX}tiny":
        return tiny_path()
    target = cache_dir() / "checkpoints" / model_ref[len(BUILTIN_PREFIX) :]
    if not (target / "config.json").is_file():
        loaded = load_model(model_ref, dtype="bf16")
        save_checkpoint(loaded.model, loaded.preprocessor, target)
        del loaded
        gc.collect()
    return target


def _fingerprint(checkpoint: Path) -> str:
    """Path, sizes and modification times of the checkpoint's files: a changed checkpoint re-exports."""
    digest = hashlib.sha256(str(checkpoint).encode())
    for path in sorted(checkpoint.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def export(model_ref: str, weight_format: str) -> tuple[Path, float | None]:
    """(export directory, seconds spent exporting or None when cached) for optimum-intel's export."""
    checkpoint = checkpoint_dir(model_ref)
    target = cache_dir() / "openvino" / f"{checkpoint.name}-{_fingerprint(checkpoint)}-{weight_format}"
    if (target / "openvino_language_model.xml").is_file():
        return target, None
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(venv_dir() / "bin" / "optimum-cli"),
        *("export", "openvino", "--model", str(checkpoint), "--task", "image-text-to-text"),
        *("--weight-format", weight_format, str(tmp)),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"optimum-cli export failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target, time.perf_counter() - start


def worker_argv(spec_json: str) -> list[str]:
    return [str(venv_dir() / "bin" / "python"), str(WORKER_SCRIPT), spec_json]
