"""Recovery after pruning: a short fine-tune of the pruned linears, distilled from the unpruned model.

Before pruning, the model answers each calibration request (greedy, a few tokens); its next-token
distributions at every position from the request's last image token on (the question, the chat
template and its own answer, teacher-forced) are the targets. After pruning, the pruned linears (and
nothing else) are trained with Adam to minimize KL(unpruned ‖ pruned) at those positions. Pruned weights
stay exactly zero: their gradients are zeroed before each step, so Adam's moments for them stay zero
and their updates are zero.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen3VLForConditionalGeneration

from slimvl.models.hooks import RequestHooks, RunCalibration, Stage
from slimvl.models.preprocess import ModelInputs
from slimvl.models.steps import DecoderSequence, build_sequence, encode_images

ANSWER_TOKENS = 4  # greedy tokens of the unpruned model's answer whose distributions are the targets


@dataclass
class Target:
    """One calibration request with the unpruned model's answer appended, and its distributions."""

    inputs: ModelInputs  # prompt + the answer's tokens but the last (teacher forcing)
    first: int  # the first position whose next-token distribution is a target
    log_probs: torch.Tensor  # (positions from `first` to the end, vocab): the unpruned log-softmax


class _RecordInputs(RequestHooks):
    """Plain hooks that keep each request's model inputs."""

    def __init__(self) -> None:
        self.inputs: list[ModelInputs] = []

    def encode_images(self, model, inputs: ModelInputs, stage: Stage):
        self.inputs.append(inputs)
        return super().encode_images(model, inputs, stage)


def distillation_targets(run: RunCalibration, model: Qwen3VLForConditionalGeneration) -> list[Target]:
    """The unpruned model's answers to the calibration requests (run with `ANSWER_TOKENS` new tokens)
    and its distributions along them (see the module docstring); `model` must not be pruned yet."""
    recorder = _RecordInputs()
    answers: list[list[int]] = []
    head = model.lm_head

    def observe(_head: nn.Module, args: tuple, _kwargs: dict) -> None:
        if len(answers) < len(recorder.inputs):
            answers.append([])
        hidden = args[0].reshape(-1, args[0].shape[-1])[-1]
        answers[-1].append(int(F.linear(hidden, head.weight, head.bias).argmax()))

    run({head: observe}, hooks=recorder)
    targets = []
    for inputs, answer in zip(recorder.inputs, answers, strict=True):
        extended = _appended(inputs, torch.tensor(answer[:-1]))
        visual = torch.nonzero(extended.mm_token_type_ids[0])
        first = int(visual.max()) if len(visual) else 0
        with torch.no_grad():
            seq = build_sequence(model, extended, encode_images(model, extended))
            log_probs = _answer_log_probs(model, seq, first, extended.input_ids.shape[1] - first)
        targets.append(Target(extended, first, log_probs))
    return targets


def _appended(inputs: ModelInputs, tokens: torch.Tensor) -> ModelInputs:
    """`inputs` with text `tokens` appended (as the answer's tokens fed back while decoding)."""
    extra = tokens.view(1, -1).to(inputs.input_ids.dtype)
    return replace(
        inputs,
        input_ids=torch.cat([inputs.input_ids, extra], dim=1).clone(),
        attention_mask=torch.cat([inputs.attention_mask, torch.ones_like(extra)], dim=1).clone(),
        mm_token_type_ids=torch.cat(
            [inputs.mm_token_type_ids, torch.zeros_like(extra).to(inputs.mm_token_type_ids.dtype)], dim=1
        ).clone(),
        pixel_values=None if inputs.pixel_values is None else inputs.pixel_values.clone(),
        image_grid_thw=None if inputs.image_grid_thw is None else inputs.image_grid_thw.clone(),
    )


def _answer_log_probs(
    model: Qwen3VLForConditionalGeneration, seq: DecoderSequence, first: int, n: int
) -> torch.Tensor:
    text = model.model.language_model
    has_visual = bool(seq.deepstack) and bool(seq.visual_mask.any())
    out = text(
        inputs_embeds=seq.inputs_embeds,
        position_ids=seq.position_ids,
        visual_pos_masks=seq.visual_mask if has_visual else None,
        deepstack_visual_embeds=seq.deepstack if has_visual else None,
    )
    return model.lm_head(out.last_hidden_state[0, first : first + n]).float().log_softmax(dim=-1)


def _kl(model: Qwen3VLForConditionalGeneration, seq: DecoderSequence, target: Target) -> torch.Tensor:
    student = _answer_log_probs(model, seq, target.first, target.log_probs.shape[0])
    return F.kl_div(student, target.log_probs, log_target=True, reduction="batchmean")


def recover(
    model: Qwen3VLForConditionalGeneration,
    targets: list[Target],
    pruned: dict[str, nn.Linear],
    steps: int,
    learning_rate: float,
    seed: int = 0,
) -> dict:
    """Fine-tune `pruned` (name -> linear; their zeros are the masks) for `steps` steps, one request per
    step in a seeded order; returns the mean KL over `targets` before and after."""
    masks = {name: linear.weight == 0 for name, linear in pruned.items()}
    with torch.no_grad():  # the vision encoder and the embedding are not trained: their outputs are fixed
        seqs = [build_sequence(model, t.inputs, encode_images(model, t.inputs)) for t in targets]

    def mean_kl() -> float:
        with torch.no_grad():
            return float(torch.stack([_kl(model, s, t) for s, t in zip(seqs, targets, strict=True)]).mean())

    before = mean_kl()
    trainable = [linear.weight for linear in pruned.values()]
    was = {p: p.requires_grad for p in model.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for weight in trainable:
        weight.requires_grad_(True)
    optimizer = torch.optim.Adam(trainable, lr=learning_rate)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed)).tolist()
    try:
        for step in range(steps):
            i = order[step % len(order)]
            loss = _kl(model, seqs[i], targets[i])
            optimizer.zero_grad()
            loss.backward()
            for name, linear in pruned.items():
                linear.weight.grad.masked_fill_(masks[name], 0)
            optimizer.step()
            with torch.no_grad():
                for name, linear in pruned.items():
                    linear.weight.masked_fill_(masks[name], 0)
    finally:
        for parameter, flag in was.items():
            parameter.requires_grad_(flag)
    return {
        "steps": steps,
        "learning_rate": learning_rate,
        "requests": len(targets),
        "kl_before": round(before, 6),
        "kl_after": round(mean_kl(), 6),
    }
