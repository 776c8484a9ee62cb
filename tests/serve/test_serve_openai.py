"""The server driven by the real `openai` client: answers equal `slimvl run`'s (the same pipeline call),
plain and streamed, with one and two images, multi-turn, with stop sequences."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from slimvl.data import examples

N_TOKENS = 12


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def scenes() -> list:
    return list(examples("test", 3))


def _run(server, images: list, prompt, max_new_tokens: int = N_TOKENS) -> str:
    """What `slimvl run` prints for these inputs (the same `SlimModel.generate`)."""
    return server.slim.generate(images, prompt, max_new_tokens=max_new_tokens).text


@pytest.mark.parametrize("n_images", [1, 2])
def test_plain_answers_equal_run(client: OpenAI, server, scenes: list, n_images: int, user_turn) -> None:
    images = [s.image for s in scenes[:n_images]]
    question = scenes[0].question
    reply = client.chat.completions.create(
        model=server.model, messages=[user_turn(question, *images)], max_tokens=N_TOKENS, temperature=0
    )
    expected = server.slim.generate(images, question, max_new_tokens=N_TOKENS)
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == expected.metrics.prompt_tokens
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    timings = reply.model_extra["slimvl"]
    assert timings["ttft_ms"] > 0 and set(timings["stages_ms"]) >= {"vision", "prefill", "decode"}


@pytest.mark.parametrize("n_images", [1, 2])
def test_streamed_pieces_join_to_the_plain_answer(
    client: OpenAI, server, scenes: list, n_images: int, user_turn
) -> None:
    images = [s.image for s in scenes[-n_images:]]
    question = scenes[1].question
    stream = client.chat.completions.create(
        model=server.model,
        messages=[user_turn(question, *images)],
        max_completion_tokens=N_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert "".join(pieces) == _run(server, images, question)
    assert len(finishes) == 1 and chunks[-1].usage is not None and not chunks[-1].choices
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_a_conversation_is_rendered_with_the_chat_template(
    client: OpenAI, server, scenes: list, user_turn
) -> None:
    first = scenes[0]
    earlier = _run(server, [first.image], first.question)
    messages = [
        {"role": "system", "content": "Answer briefly."},
        user_turn(first.question, first.image),
        {"role": "assistant", "content": earlier},
        {"role": "user", "content": "And the other one?"},
    ]
    reply = client.chat.completions.create(model=server.model, messages=messages, max_tokens=N_TOKENS)
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": first.question}]},
        {"role": "assistant", "content": [{"type": "text", "text": earlier}]},
        {"role": "user", "content": [{"type": "text", "text": "And the other one?"}]},
    ]
    assert reply.choices[0].message.content == _run(server, [first.image], conversation)
    one_turn = client.chat.completions.create(model=server.model, messages=messages[-1:], max_tokens=N_TOKENS)
    assert reply.usage.prompt_tokens > one_turn.usage.prompt_tokens


def test_a_stop_sequence_ends_the_answer_plain_and_streamed(random_server, scenes: list, user_turn) -> None:
    scene = scenes[2]
    full = _run(random_server, [scene.image], scene.question, max_new_tokens=40)
    middle = len(full) // 2
    stop = full[middle : middle + 3]
    assert stop.strip() and len(full) > 10
    expected = full[: full.find(stop)].rstrip()
    client = OpenAI(base_url=random_server.url, api_key="unused", max_retries=0, timeout=120)
    messages = [user_turn(scene.question, scene.image)]
    plain = client.chat.completions.create(
        model=random_server.model, messages=messages, max_tokens=40, stop=[stop, "never"]
    )
    streamed = client.chat.completions.create(
        model=random_server.model, messages=messages, max_tokens=40, stop=stop, stream=True
    )
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert plain.choices[0].message.content == text == expected
    assert plain.choices[0].finish_reason == "stop" == chunks[-1].choices[0].finish_reason
    unstopped = client.chat.completions.create(model=random_server.model, messages=messages, max_tokens=40)
    assert unstopped.choices[0].message.content == full and unstopped.choices[0].finish_reason == "length"


def test_models_and_health(client: OpenAI, server) -> None:
    assert [m.id for m in client.models.list().data] == [server.model]
    assert httpx.get(server.url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
