"""One request: preprocess → vision → sparsify → decoder prefill → decode loop, each stage timed.

Between stages the freed heap is handed back to the OS (`malloc_trim`, ~15 ms at 2B): activation
buffers up to 32 MB are served from the heap for speed (see `slimvl.load`), and without a trim the
vision stage's freed buffers, the prefill's and the KV cache's pile up, so peak RSS grew ~100 MB over
a few requests at 2B.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from slimvl.errors import InputError
from slimvl.memory import release_free_memory
from slimvl.models.decode import LeanDecoder, StaticKVCache
from slimvl.models.hooks import RequestHooks
from slimvl.models.loader import LoadedModel
from slimvl.models.preprocess import prompt_text
from slimvl.models.steps import build_sequence
from slimvl.models.weights import decode_bytes_per_token, weight_bytes
from slimvl.monitor import EnergyMeter, RequestMetrics, RequestMonitor


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    metrics: RequestMetrics
    first_logits: torch.Tensor  # (vocab,) float32: the distribution the first answer token was picked from


class Pipeline:
    """Answers questions about images with one loaded (and possibly optimized) model; `hooks` are where
    the recipe's run-time parts act on each request (by default none does)."""

    def __init__(self, loaded: LoadedModel, hooks: RequestHooks | None = None, threads: int | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.preprocessor = loaded.preprocessor
        self.hooks = hooks or RequestHooks()
        self.threads = threads
        self.decoder = LeanDecoder(self.model)
        self.eos_token_ids = _eos_ids(loaded)
        self.weight_bytes = weight_bytes(self.model)
        self.decode_bytes = decode_bytes_per_token(self.model)
        self.gpu_devices = cuda_indices(self.model)
        self._energy = EnergyMeter()

    @torch.inference_mode()
    def __call__(
        self,
        images: list[Image.Image],
        prompt: str | list[dict],
        max_new_tokens: int = 64,
        ignore_eos: bool = False,
        on_token: Callable[[int], bool] | None = None,
        max_prompt_tokens: int | None = None,
    ) -> Answer:
        """Answer `prompt` (a question, or a chat conversation: `Preprocessor`) about `images`, greedily.

        `on_token` sees each new token as it is chosen; when it returns False generation stops there
        (a client gone, a stop sequence found). A prompt of more than `max_prompt_tokens` tokens (images
        included) is refused with an `InputError` before any model work."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: got {max_new_tokens}, allowed: an integer >= 1")
        hooks = self.hooks
        mode = hooks.begin_request(images, prompt_text(prompt), max_new_tokens)
        threads = mode.threads or self.threads
        if threads is not None:
            torch.set_num_threads(threads)
        monitor = RequestMonitor(
            threads=torch.get_num_threads(),
            weight_bytes=self.weight_bytes,
            decode_weight_bytes_per_token=self.decode_bytes,
            energy=self._energy,
            gpu_devices=self.gpu_devices,
        )
        tokens: list[int] = []
        stage = monitor.stage
        with monitor:
            with stage("preprocess"):
                inputs = self.preprocessor(images, prompt, max_pixels=mode.max_pixels)
                length = inputs.input_ids.shape[1]
                if max_prompt_tokens is not None and length > max_prompt_tokens:
                    raise InputError(
                        f"the prompt has {length} tokens (images included); max_prompt_tokens is {max_prompt_tokens}"
                    )
            with stage("vision"):
                visual = hooks.encode_images(self.model, inputs, stage)
                seq = build_sequence(self.model, inputs, visual)
                release_free_memory()
            with stage("sparsify"):
                seq = hooks.after_vision(seq)
            with stage("prefill"):
                # The prefill writes keys/values straight into the decode loop's cache.
                kv_cache = StaticKVCache.allocate(
                    self.model.model.language_model, seq.length + max_new_tokens, seq.inputs_embeds.dtype
                )
                cache = kv_cache.prefill_cache()
                logits, cache, seq = hooks.prefill(self.model, seq, cache, stage)
                kv_cache.take_length(cache)
                del cache
                first_logits = logits[0, -1].float()
                token = first_logits.argmax()
                tokens.append(int(token))
                release_free_memory()
            going = on_token is None or on_token(tokens[-1])
            with stage("decode"):
                position = seq.next_position
                while (
                    going
                    and len(tokens) < max_new_tokens
                    and (ignore_eos or tokens[-1] not in self.eos_token_ids)
                ):
                    logits = hooks.decode_step(self.decoder, token, position, kv_cache)
                    token = logits[0].argmax()
                    tokens.append(int(token))
                    position += 1
                    going = on_token is None or on_token(tokens[-1])
            del kv_cache
            release_free_memory()
        answer_ids = tokens if ignore_eos else [t for t in tokens if t not in self.eos_token_ids]
        metrics = monitor.metrics(
            new_tokens=len(tokens),
            prompt_tokens=inputs.input_ids.shape[1],
            visual_tokens=inputs.visual_tokens,
            visual_tokens_kept=int(seq.visual_mask.sum()),
            mode=dict(mode.record) if mode.record else None,
        )
        return Answer(self.preprocessor.decode(answer_ids).strip(), tokens, metrics, first_logits)


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for source in (loaded.model.config.text_config.eos_token_id, loaded.preprocessor.tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return ids


def cuda_indices(model: torch.nn.Module) -> tuple[int, ...]:
    """The CUDA devices holding any of `model`'s tensors (a GPU placement), in order."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple(sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"}))
