from __future__ import annotations

import pytest
import torch
from PIL import Image

from slimvl.models.loader import LoadedModel
from slimvl.pipeline import Pipeline

QUESTION = "How many circles are there?"
N = 6


@pytest.fixture(scope="module")
def pipeline(small_model: LoadedModel) -> Pipeline:
    return Pipeline(small_model)


def _reference_tokens(loaded: LoadedModel, images: list[Image.Image], prompt: str, n: int) -> list[int]:
    """transformers' own greedy generation, forced to produce exactly n tokens."""
    inputs = loaded.preprocessor(images, prompt)
    out = loaded.model.generate(**inputs.model_kwargs(), do_sample=False, max_new_tokens=n, min_new_tokens=n)
    return out[0, inputs.input_ids.shape[1] :].tolist()


@pytest.mark.parametrize("which", [["square"], ["tall"], ["tall", "square"], []])
def test_greedy_tokens_match_transformers_generate(
    which: list[str],
    pipeline: Pipeline,
    small_model: LoadedModel,
    square_image: Image.Image,
    tall_image: Image.Image,
) -> None:
    images = [{"square": square_image, "tall": tall_image}[name] for name in which]
    answer = pipeline(images, QUESTION, max_new_tokens=N, ignore_eos=True)
    assert answer.token_ids == _reference_tokens(small_model, images, QUESTION, N)


def test_stops_at_eos_unless_ignored(
    pipeline: Pipeline, square_image: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = pipeline([square_image], QUESTION, max_new_tokens=N, ignore_eos=True).token_ids
    assert len(full) == N
    # Pretend the first token that is not a repeat is the eos token.
    stop = next((i for i, token in enumerate(full) if i > 0 and token not in full[:i]), 0)
    monkeypatch.setattr(pipeline, "eos_token_ids", {full[stop]})

    stopped = pipeline([square_image], QUESTION, max_new_tokens=N)
    assert stopped.token_ids == full[: stop + 1]  # the eos token is generated, then decoding stops
    assert stopped.metrics.new_tokens == stop + 1
    assert stopped.text == pipeline.preprocessor.decode(full[:stop]).strip()  # eos is not in the text

    ignored = pipeline([square_image], QUESTION, max_new_tokens=N, ignore_eos=True)
    assert ignored.token_ids == full


def test_metrics(pipeline: Pipeline, small_model: LoadedModel, square_image: Image.Image) -> None:
    answer = pipeline([square_image], QUESTION, max_new_tokens=N, ignore_eos=True)
    m = answer.metrics
    inputs = small_model.preprocessor([square_image], QUESTION)
    assert set(m.stages_ms) == {"preprocess", "vision", "sparsify", "prefill", "decode"}
    assert m.ttft_ms > 0 and m.decode_tok_s is not None and m.decode_tok_s > 0
    assert m.new_tokens == N and m.decode_tokens == N - 1
    assert m.prompt_tokens == inputs.input_ids.shape[1]
    assert m.visual_tokens == m.visual_tokens_kept == inputs.visual_tokens == 196
    assert m.weight_bytes > m.decode_weight_bytes_per_token > 0
    assert m.peak_rss_bytes > 0 and m.wall_s > 0 and m.threads == torch.get_num_threads()


def test_single_token(pipeline: Pipeline, square_image: Image.Image) -> None:
    answer = pipeline([square_image], QUESTION, max_new_tokens=1, ignore_eos=True)
    assert len(answer.token_ids) == 1 and answer.metrics.decode_tok_s is None


def test_max_new_tokens_must_be_positive(pipeline: Pipeline, square_image: Image.Image) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        pipeline([square_image], QUESTION, max_new_tokens=0)
