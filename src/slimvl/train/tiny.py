"""Train `builtin:tiny`: a small Qwen3-VL on the synthetic VQA task, saved as an HF checkpoint.

The model is the real `Qwen3VLForConditionalGeneration` (DeepStack, interleaved MRoPE, patch 16,
spatial merge 2, tied embeddings) at small sizes. Inputs go through the same `Preprocessor` that
inference uses, and the loss covers only the answer word and the closing `<|im_end|>`.

    python scripts/train_tiny.py --out src/slimvl/models/assets/tiny            # CPU, 2 threads
    python scripts/train_tiny.py --out ... --device cuda --workers 15           # a GPU, faster
    python scripts/train_tiny.py --out NEW --init OLD ...                       # train OLD further

`--init` continues from a checkpoint this script saved, on the training examples after those it has seen;
its `training.json` then lists every stage, so the shipped weights stay reproducible command by command.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Qwen3VLForConditionalGeneration

from slimvl.data import SPLITS
from slimvl.models.checkpoint import save_checkpoint
from slimvl.models.preprocess import Preprocessor
from slimvl.train.examples import TrainStream, collate, encode_example, next_train_seed, parse_type_weights
from slimvl.train.supervision import (
    AUX_WEIGHT,
    GROUND_WEIGHT,
    HOPS,
    IGNORE,
    TRAINING_KEYS,
    AuxHead,
    grounding_loss,
)
from slimvl.train.tiny_model import build_preprocessor, load_weights, patch_embed_as_linear, tiny_config


def _one_thread(_worker: int) -> None:
    """Loader workers run PIL and small tensor ops: one thread each, or they oversubscribe the CPU."""
    torch.set_num_threads(1)


def lr_at(step: int, total: int, peak: float, warmup: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over the steps, or over the time cap if that binds first."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def answer_accuracy(model, preprocessor: Preprocessor, seeds: range, device: str, batch: int) -> float:
    """Share of examples whose first answer token is the argmax after the prompt (answers are one token)."""
    model.eval()
    right = 0
    for start in range(seeds.start, seeds.stop, batch):
        items = [encode_example(preprocessor, s) for s in range(start, min(start + batch, seeds.stop))]
        b = {k: v.to(device) for k, v in collate(items, preprocessor.tokenizer.pad_token_id).items()}
        labels = b.pop("labels")
        for key in TRAINING_KEYS:
            b.pop(key)
        logits = model(**b).logits
        first = (labels != IGNORE).int().argmax(1)  # position of the answer token
        rows = torch.arange(len(items), device=device)
        right += int((logits[rows, first - 1].argmax(-1) == labels[rows, first]).sum())
    model.train()
    return right / len(seeds)


def earlier_stages(init: str | None) -> list[dict]:
    """The stages that made the checkpoint `init` (from its training.json), each without its loss log."""
    if not init:
        return []
    record = json.loads((Path(init) / "training.json").read_text())
    stages = record.get("earlier_stages", [])
    return [*stages, {k: v for k, v in record.items() if k not in ("loss_log", "earlier_stages")}]


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    preprocessor = build_preprocessor()
    model = Qwen3VLForConditionalGeneration(tiny_config(preprocessor))
    stages = earlier_stages(args.init)
    if args.init:
        load_weights(model, args.init)
    model = model.to(args.device)
    # Eager text attention returns the attention weights the grounding loss supervises.
    model.set_attn_implementation({"text_config": "eager", "vision_config": "sdpa", "": "eager"})
    model.train()
    patch_embed = model.model.visual.patch_embed
    patch_embed.forward = lambda pixels: patch_embed_as_linear(patch_embed, pixels)
    aux = AuxHead(model.config.text_config.hidden_size).to(args.device)
    captured: dict[str, torch.Tensor] = {}
    hook = model.model.visual.register_forward_hook(
        lambda _m, _i, out: captured.update(tokens=out.pooler_output)
    )
    params = [*model.parameters(), *aux.parameters()]
    # No decay on norm scales and biases: the attention sharpness that grounding needs lives in q/k norms.
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.05},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))
    first_seed = next_train_seed(stages)
    weights = parse_type_weights(args.type_weights)
    # Types are drawn uniformly: the share of seeds kept is the mean of weight / largest weight.
    share = sum(weights.values()) / (len(weights) * max(weights.values()))
    available = (SPLITS["train"].stop - first_seed) * share * 0.9
    if (args.steps + args.workers) * args.batch > available:
        raise ValueError(f"steps * batch: got {args.steps * args.batch}, allowed: < {int(available)}")
    # Each loader worker batches its own share, so a few spare batches keep every step full.
    stream = TrainStream(preprocessor, first_seed, (args.steps + args.workers) * args.batch, weights)
    loader = DataLoader(
        stream,
        batch_size=args.batch,
        num_workers=args.workers,
        collate_fn=lambda items: collate(items, preprocessor.tokenizer.pad_token_id),
        persistent_workers=False,
        worker_init_fn=_one_thread,
        prefetch_factor=8 if args.workers else None,
    )
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=args.bf16)
    start, log = time.time(), []
    steps_done, window, next_seed = 0, [], first_seed
    for step, batch in enumerate(loader):
        elapsed = time.time() - start
        if step >= args.steps or (args.max_train_s and elapsed > args.max_train_s):
            break
        time_progress = elapsed / args.max_train_s if args.max_train_s else 0.0
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup, time_progress)
        steps_done = step + 1
        next_seed = max(next_seed, int(batch.pop("seed").max()) + 1)
        batch = {k: v.to(args.device, non_blocking=True) for k, v in batch.items()}
        targets = {key: batch.pop(key) for key in TRAINING_KEYS}
        with autocast:
            out = model(**batch, output_attentions=True)
            answer_loss = out.loss
            aux_loss = aux.loss(captured["tokens"], targets)
            hop_losses = grounding_loss(out.attentions, {**batch, **targets}, batch["labels"])
        loss = answer_loss + AUX_WEIGHT * aux_loss + GROUND_WEIGHT * hop_losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        window.append((answer_loss.item(), aux_loss.item(), *hop_losses.tolist()))
        if step % args.log_every == 0 or step == args.steps - 1:
            entry = {  # means over the steps since the last entry
                "step": step,
                **{
                    name: round(sum(values[i] for values in window) / len(window), 4)
                    for i, name in enumerate(
                        ("answer_loss", "aux_loss", *(f"hop{k}_loss" for k in range(len(HOPS))))
                    )
                },
                "elapsed_s": round(time.time() - start, 1),
            }
            log.append(entry)
            window.clear()
            print(json.dumps(entry), flush=True)
    train_s = time.time() - start
    hook.remove()
    val = range(SPLITS["val"].start, SPLITS["val"].start + args.val_n)
    accuracy = answer_accuracy(model, preprocessor, val, args.device, args.batch)
    model = model.to("cpu").float().eval()
    model.set_attn_implementation("sdpa")
    save_checkpoint(model, preprocessor, args.out)
    record = {
        "command": "python scripts/train_tiny.py " + " ".join(args.argv),
        "seed": args.seed,
        "steps_planned": args.steps,
        "steps_done": steps_done,
        "time_cap_bound": steps_done < args.steps,
        "batch": args.batch,
        "examples": steps_done * args.batch,
        "type_weights": weights,
        "next_seed": next_seed,
        "train_seconds": round(train_s, 1),
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": args.threads if args.device == "cpu" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "val_first_token_accuracy": accuracy,
        "val_n": args.val_n,
        "params": sum(p.numel() for p in model.parameters()),
        "total_train_seconds": round(train_s + sum(stage["train_seconds"] for stage in stages), 1),
        "earlier_stages": stages,
        "loss_log": log,
    }
    (Path(args.out) / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="continue training this checkpoint (saved by this script)")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--type-weights",
        help="e.g. position=3,relation=3,count=2: how often each question type is seen (others 1, 0: never)",
    )
    p.add_argument("--val-n", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast")
    p.add_argument(
        "--max-train-s", type=float, default=0.0, help="stop (and finish the cosine decay) by then"
    )
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else []
    return args


def main(argv: list[str] | None = None) -> int:
    import sys

    args = parse_args(argv if argv is not None else sys.argv[1:])
    record = train(args)
    print(json.dumps({k: v for k, v in record.items() if k != "loss_log"}, indent=2))
    return 0
