"""The optimized-model directory: what `slimvl optimize` writes and `slimvl.load` reads back.

    DIR/config.json, tokenizer and processor files   the original checkpoint's, unchanged
    DIR/model.safetensors                            the optimized weights (e.g. int8 + scales); those
                                                     with many zeros (pruned) in the sparse-bitmask
                                                     layout (`slimvl.sparse_storage`)
    DIR/slimvl.json                                  format version, recipe, per-optimization plans,
                                                     size and SHA-256 of the weights file, the names
                                                     of the tensors stored compressed

Writing goes to a temporary directory renamed into place when complete. Reading checks the manifest and
the weights' size and hash before anything is built, so a truncated or tampered directory fails with a
clear message instead of loading wrong numbers. The model is built on the meta device and the stored
tensors are assigned to it: loading never holds an fp32 copy.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from slimvl.atomic import write_directory_atomic
from slimvl.config import Recipe
from slimvl.errors import ModelLoadError
from slimvl.sparse_storage import compress_state, decompress_state

FORMAT_VERSION = 1
MANIFEST = "slimvl.json"
WEIGHTS = "model.safetensors"


def is_optimized_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_optimized(
    out_dir: str | Path,
    state_dict: dict,
    save_originals: Callable[[Path], None],
    recipe: Recipe,
    plans: dict[str, dict],
    source: str,
) -> Path:
    """Write the directory atomically; `save_originals(tmp)` writes config/tokenizer/processor files."""

    def fill(tmp: Path) -> None:
        save_originals(tmp)
        for stale in tmp.glob("*.safetensors*"):
            stale.unlink()
        weights = tmp / WEIGHTS
        stored, compressed = compress_state(state_dict)
        save_file({k: v.contiguous() for k, v in stored.items()}, str(weights), metadata={"format": "pt"})
        del stored
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "recipe": recipe.to_dict(),
            "plans": plans,
            "weights": {
                "file": WEIGHTS,
                "bytes": weights.stat().st_size,
                "sha256": file_sha256(weights),
                "sparse_bitmask": compressed,
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    return write_directory_atomic(out_dir, fill)


def read_manifest(path: Path) -> dict:
    """The checked manifest: version supported, weights present with the recorded size and hash."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path / MANIFEST} is unreadable: {exc}") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelLoadError(f"'{path}' has format_version {version!r}; this slimvl reads {FORMAT_VERSION}")
    record = manifest.get("weights") or {}
    weights = path / str(record.get("file", WEIGHTS))
    if not weights.is_file():
        raise ModelLoadError(f"'{path}' is incomplete: {weights.name} is missing")
    size = weights.stat().st_size
    if size != record.get("bytes"):
        raise ModelLoadError(
            f"'{path}' is truncated or altered: {weights.name} has {size} bytes, the manifest says {record.get('bytes')}"
        )
    if file_sha256(weights) != record.get("sha256"):
        raise ModelLoadError(f"'{path}' is altered: {weights.name} does not match the SHA-256 in {MANIFEST}")
    try:
        manifest["recipe_obj"] = Recipe.from_dict(manifest["recipe"])
    except (KeyError, ValueError) as exc:
        raise ModelLoadError(f"'{path}': the recipe in {MANIFEST} is invalid: {exc}") from exc
    return manifest


_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _header(file: Path) -> tuple[dict, int]:
    """The safetensors header of ``file`` and the offset its data starts at."""
    with file.open("rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(header_len)), 8 + header_len


def map_tensor(path: Path, manifest: dict, name: str) -> tuple[torch.Tensor, str, int]:
    """Tensor ``name`` of the weights file mapped copy-on-write, not read (pages load when touched),
    with the file and the offset its bytes start at."""
    if name in manifest["weights"].get("sparse_bitmask", []):
        raise ModelLoadError(f"'{path}': {name} is stored compressed and cannot be mapped from the file")
    file = path / manifest["weights"]["file"]
    header, base = _header(file)
    info = header[name]
    start, end = info["data_offsets"]
    array = np.memmap(file, dtype=np.uint8, mode="c", offset=base + start, shape=(end - start,))
    return torch.from_numpy(array).view(_DTYPES[info["dtype"]]).view(info["shape"]), str(file), base + start


def load_weights(path: Path, manifest: dict, skip: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Read every tensor of the safetensors file (but those in ``skip``) into memory the process owns,
    those stored compressed made dense.

    `safetensors.torch.load_file` maps the file: every page a kernel touches while packing then stays
    in the process's RSS for as long as any tensor of the file lives, which doubled the resident size of
    a 2B int8 model. Reading into owned tensors keeps the peak near the final footprint.
    """
    file = path / manifest["weights"]["file"]
    try:
        header, base = _header(file)
        with file.open("rb") as f:
            state = {}
            for name, info in header.items():
                if name == "__metadata__" or name in skip:
                    continue
                tensor = torch.empty(info["shape"], dtype=_DTYPES[info["dtype"]])
                start, end = info["data_offsets"]
                f.seek(base + start)
                if f.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy())) != end - start:
                    raise ModelLoadError(f"'{path}': {file.name} ends inside tensor {name}")
                state[name] = tensor
            return decompress_state(state, manifest["weights"].get("sparse_bitmask", []))
    except (OSError, KeyError, ValueError, struct.error) as exc:
        raise ModelLoadError(f"cannot read the weights of '{path}': {exc}") from exc
