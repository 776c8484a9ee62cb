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
import random
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import Qwen3VLForConditionalGeneration

from slimvl.data import (
    ANSWER_VOCABULARY,
    QUESTION_TYPES,
    SPLITS,
    corpus_texts,
    make_example,
    question_type,
)
from slimvl.data.grounding import referring_word
from slimvl.models.builder import config_from_dict
from slimvl.models.checkpoint import qwen3vl_image_processor, save_checkpoint, small_config_dict
from slimvl.models.preprocess import Preprocessor
from slimvl.models.tokenizer import build_tokenizer, special_token_ids
from slimvl.train.supervision import (
    AUX_WEIGHT,
    GROUND_WEIGHT,
    HOPS,
    IGNORE,
    MERGE,
    TRAINING_KEYS,
    AuxHead,
    focus_masks,
    grounding_loss,
    token_object_labels,
    token_overlaps,
)

TINY_SIZES = {
    "text_hidden": 192,
    "text_layers": 4,
    "vision_hidden": 128,
    "vision_depth": 3,
    "deepstack": (0, 1, 2),
}
# The tiny model sees every image at about 256x256 pixels (64 visual tokens), as its processor config
# says: 448x448 inputs are resized by the processor, at inference exactly as in training.
TINY_PIXELS = 256 * 256


def build_preprocessor() -> Preprocessor:
    # Answers appear alone after "assistant\n", so they are in the corpus alone too: one token each.
    tokenizer = build_tokenizer([*corpus_texts(), *ANSWER_VOCABULARY], vocab_size=1024)
    return Preprocessor(tokenizer, qwen3vl_image_processor(min_pixels=TINY_PIXELS, max_pixels=TINY_PIXELS))


def tiny_config(preprocessor: Preprocessor):
    raw = small_config_dict(vocab_size=len(preprocessor.tokenizer), **TINY_SIZES)
    raw["text_config"].update(
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=48,
        intermediate_size=576,
        rope_parameters={**raw["text_config"]["rope_parameters"], "mrope_section": [8, 8, 8]},
    )
    raw["vision_config"].update(num_heads=2, intermediate_size=512, num_position_embeddings=256)
    return config_from_dict(raw, **special_token_ids(preprocessor.tokenizer))


def encode_example(preprocessor: Preprocessor, seed: int) -> dict[str, torch.Tensor]:
    """Prompt tokens + answer + <|im_end|>; labels only on the answer part."""
    example = make_example(seed)
    inputs = preprocessor([example.image], example.question)
    tokenizer = preprocessor.tokenizer
    answer = tokenizer(example.answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    target = torch.cat([answer, torch.tensor([tokenizer.eos_token_id])])
    input_ids = torch.cat([inputs.input_ids[0], target])
    labels = torch.full_like(input_ids, IGNORE)
    labels[-len(target) :] = target
    mm = torch.cat([inputs.mm_token_type_ids[0], torch.zeros_like(target, dtype=torch.int32)])
    overlaps = token_overlaps(example.objects, example.image.size, inputs.image_grid_thw[0])
    colors, shapes = token_object_labels(example.objects, overlaps)
    cols = int(inputs.image_grid_thw[0, 2]) // MERGE
    word = tokenizer(" " + referring_word(example), add_special_tokens=False)["input_ids"]
    word_position = int(torch.nonzero(inputs.input_ids[0] == word[-1]).max())
    return {
        "aux_colors": colors,
        "aux_shapes": shapes,
        "aux_rows": torch.div(torch.arange(len(colors)), cols, rounding_mode="floor"),
        "aux_cols": torch.arange(len(colors)) % cols,
        "focus": focus_masks(example, overlaps),
        "ground_query": torch.tensor([[word_position], [len(inputs.input_ids[0]) - 1]]),  # (hops, 1)
        "input_ids": input_ids,
        "labels": labels,
        "mm_token_type_ids": mm,
        "pixel_values": inputs.pixel_values,
        "image_grid_thw": inputs.image_grid_thw,
    }


def parse_type_weights(text: str | None) -> dict[str, float]:
    """``"position=3,relation=3"`` → a weight per question type (unnamed types 1)."""
    weights = dict.fromkeys(QUESTION_TYPES, 1.0)
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise ValueError(f"type-weights: got type {name!r}, allowed: {', '.join(QUESTION_TYPES)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"type-weights: got {part!r}, allowed: TYPE=NUMBER") from None
        if not weights[name] >= 0:
            raise ValueError(f"type-weights: got {name}={value}, allowed: a number >= 0")
    if not max(weights.values()) > 0:
        raise ValueError("type-weights: every type has weight 0, allowed: at least one > 0")
    return weights


_ACCEPT_SALT = 0x5EED  # the acceptance draw must not reuse the example's own random stream


def accepted(seed: int, weights: dict[str, float]) -> bool:
    """Whether the train example of `seed` is used under `weights`: its type is drawn without rendering
    it, and kept with probability weight / the largest weight (deterministic per seed)."""
    keep = weights[question_type(seed)] / max(weights.values())
    return random.Random(seed ^ _ACCEPT_SALT).random() < keep


class TrainStream(IterableDataset):
    """Train-split examples from `first_seed` on, in seed order, split across loader workers; with type
    weights, an example is skipped unless `accepted` (hard types can be seen more often)."""

    def __init__(
        self,
        preprocessor: Preprocessor,
        first_seed: int,
        count: int,
        weights: dict[str, float] | None = None,
    ):
        self.preprocessor, self.first_seed, self.count = preprocessor, first_seed, count
        self.weights = weights

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        uniform = self.weights is None or len(set(self.weights.values())) == 1
        remaining = -(-self.count // workers)
        for seed in range(self.first_seed + worker, SPLITS["train"].stop, workers):
            if remaining == 0:
                return
            if uniform or accepted(seed, self.weights):
                remaining -= 1
                yield {**encode_example(self.preprocessor, seed), "seed": torch.tensor([seed])}


def next_train_seed(stages: list[dict]) -> int:
    """The first train seed after every seed the earlier stages used (stages before type weights
    existed used exactly their number of examples)."""
    seed = SPLITS["train"].start
    for stage in stages:
        seed = stage.get("next_seed", seed + stage["examples"])
    return seed


def collate(items: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(it["input_ids"]) for it in items)

    def pad(key: str, value: int) -> torch.Tensor:
        out = torch.full((len(items), length), value, dtype=items[0][key].dtype)
        for i, it in enumerate(items):
            out[i, : len(it[key])] = it[key]
        return out

    mask = torch.zeros((len(items), length), dtype=torch.long)
    for i, it in enumerate(items):
        mask[i, : len(it["input_ids"])] = 1
    return {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", IGNORE),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "attention_mask": mask,
        "pixel_values": torch.cat([it["pixel_values"] for it in items]),
        "image_grid_thw": torch.cat([it["image_grid_thw"] for it in items]),
        **{key: torch.cat([it[key] for it in items], dim=-1) for key in TRAINING_KEYS},
        **({"seed": torch.cat([it["seed"] for it in items])} if "seed" in items[0] else {}),
    }


def patch_embed_as_linear(module: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The patch embedding's Conv3d (kernel == stride == the whole patch) computed as the linear map it is.

    Same parameters, same result; on a CPU its backward pass is several times faster than the conv's.
    """
    weight = module.proj.weight
    return torch.nn.functional.linear(
        pixels.to(weight.dtype), weight.view(weight.shape[0], -1), module.proj.bias
    )


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


def load_weights(model: torch.nn.Module, init: str) -> None:
    state = load_file(str(Path(init) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings: the checkpoint stores the table once and lm_head shares it.
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"init: {init} does not match the tiny model ({missing=}, {unexpected=})")


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
