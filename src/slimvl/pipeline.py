"""One request: preprocess → vision → sparsify → decoder prefill → decode loop, each stage timed.

Between stages the freed heap is handed back to the OS (`malloc_trim`, ~15 ms at 2B): activation
buffers up to 32 MB are served from the heap for speed (see `slimvl.load`), and without a trim the
vision stage's freed buffers, the prefill's and the KV cache's pile up, so peak RSS grew ~100 MB over
a few requests at 2B.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from slimvl.memory import release_free_memory
from slimvl.models.decode import LeanDecoder, StaticKVCache
from slimvl.models.inplace import use_inplace_activations
from slimvl.models.loader import LoadedModel
from slimvl.models.steps import DecoderSequence, build_sequence, encode_images, prefill
from slimvl.models.weights import decode_bytes_per_token, weight_bytes
from slimvl.monitor import EnergyMeter, RequestMetrics, RequestMonitor

# A sparsifier drops visual tokens between the vision encoder and the prefill. One that prunes inside the
# decoder (attention scorer) also has `prefill(model, seq, cache) -> (logits, cache, kept_seq)`, run instead;
# one that prunes inside the vision encoder has `encode_images(model, inputs) -> VisualFeatures`, run instead
# of the plain encoder.
Sparsifier = Callable[[DecoderSequence], DecoderSequence]


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    metrics: RequestMetrics
    first_logits: torch.Tensor  # (vocab,) float32: the distribution the first answer token was picked from


class Pipeline:
    """Answers questions about images with one loaded (and possibly optimized) model."""

    def __init__(self, loaded: LoadedModel, sparsifier: Sparsifier | None = None, threads: int | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.preprocessor = loaded.preprocessor
        self.sparsifier = sparsifier
        self.threads = threads
        use_inplace_activations(self.model)  # the same numbers, fewer activation-sized buffers
        self.decoder = LeanDecoder(self.model)
        self.eos_token_ids = _eos_ids(loaded)
        self.weight_bytes = weight_bytes(self.model)
        self.decode_bytes = decode_bytes_per_token(self.model)
        self._energy = EnergyMeter()

    @torch.inference_mode()
    def __call__(
        self, images: list[Image.Image], prompt: str, max_new_tokens: int = 64, ignore_eos: bool = False
    ) -> Answer:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: got {max_new_tokens}, allowed: an integer >= 1")
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        monitor = RequestMonitor(
            threads=torch.get_num_threads(),
            weight_bytes=self.weight_bytes,
            decode_weight_bytes_per_token=self.decode_bytes,
            energy=self._energy,
        )
        tokens: list[int] = []
        with monitor:
            with monitor.stage("preprocess"):
                inputs = self.preprocessor(images, prompt)
            with monitor.stage("vision"):
                encode = getattr(self.sparsifier, "encode_images", encode_images)
                visual = encode(self.model, inputs)
                seq = build_sequence(self.model, inputs, visual)
                release_free_memory()
            with monitor.stage("sparsify"):
                if self.sparsifier is not None and visual is not None:
                    seq = self.sparsifier(seq)
            with monitor.stage("prefill"):
                # The prefill writes keys/values straight into the decode loop's cache.
                kv_cache = StaticKVCache.allocate(
                    self.model.config.text_config, seq.length + max_new_tokens, seq.inputs_embeds.dtype
                )
                cache = kv_cache.prefill_cache()
                pruning_prefill = getattr(self.sparsifier, "prefill", None) if visual is not None else None
                if pruning_prefill is not None:
                    logits, cache, seq = pruning_prefill(self.model, seq, cache)
                else:
                    logits, cache = prefill(self.model, seq, cache)
                kv_cache.take_length(cache)
                del cache
                first_logits = logits[0, -1].float()
                token = first_logits.argmax()
                tokens.append(int(token))
                release_free_memory()
            with monitor.stage("decode"):
                position = seq.next_position
                while len(tokens) < max_new_tokens and (ignore_eos or tokens[-1] not in self.eos_token_ids):
                    logits = self.decoder.step(token, position, kv_cache)
                    token = logits[0].argmax()
                    tokens.append(int(token))
                    position += 1
            del kv_cache
            release_free_memory()
        answer_ids = tokens if ignore_eos else [t for t in tokens if t not in self.eos_token_ids]
        metrics = monitor.metrics(
            new_tokens=len(tokens),
            prompt_tokens=inputs.input_ids.shape[1],
            visual_tokens=inputs.visual_tokens,
            visual_tokens_kept=int(seq.visual_mask.sum()),
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
