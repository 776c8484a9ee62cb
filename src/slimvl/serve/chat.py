"""A chat completion request as OpenAI (and vLLM) define it, checked and turned into what the pipeline
takes: the conversation in the chat template's form, its images in order, and the generation settings.

Decoding is greedy: sampling parameters that would change that (``temperature`` > 0, ``top_p`` < 1,
``n`` > 1, penalties, ``logit_bias``, ``logprobs``, tools) are refused by name rather than ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from slimvl.serve.errors import APIError, bad_request
from slimvl.serve.limits import ServerLimits
from slimvl.serve.media import MediaReader

ROLES = ("system", "user", "assistant")
MAX_STOPS = 4

# field -> (the value that means "off", why it is refused otherwise)
_GREEDY_ONLY = {
    "temperature": (0, "this server decodes greedily: temperature must be 0 (or left out)"),
    "top_p": (1, "this server decodes greedily: top_p must be 1 (or left out)"),
    "n": (1, "this server returns one choice: n must be 1"),
    "presence_penalty": (0, "presence_penalty is not supported: it must be 0"),
    "frequency_penalty": (0, "frequency_penalty is not supported: it must be 0"),
    "logprobs": (False, "logprobs are not supported"),
    "top_logprobs": (0, "top_logprobs are not supported"),
}
_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logit_bias", "audio", "prediction")


@dataclass
class ChatRequest:
    conversation: list[dict]  # messages in the chat template's form (image parts without data)
    images: list[Image.Image]
    max_tokens: int
    stops: list[str]
    stream: bool
    include_usage: bool


def parse_chat(body: Any, served_model: str, limits: ServerLimits, media: MediaReader) -> ChatRequest:
    """The checked request; APIError (400, or 404 for another model) naming the field at fault."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != served_model:
        raise APIError(
            404,
            f"the model {model!r} does not exist; this server serves {served_model!r}",
            "model",
            "model_not_found",
        )
    _refuse_sampling(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", "messages")
    conversation, image_urls = [], []
    for i, message in enumerate(messages):
        conversation.append(_message(message, i, image_urls))
    if conversation[-1]["role"] == "assistant":
        raise bad_request(
            "the last message must not be the assistant's (continuing it is not supported)", "messages"
        )
    if len(image_urls) > limits.max_images:
        raise bad_request(
            f"the request has {len(image_urls)} images; max_images is {limits.max_images}",
            "messages",
            "max_images",
        )
    stream = _bool(body, "stream", False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    return ChatRequest(
        conversation=conversation,
        images=[media.open(url) for url in image_urls],
        max_tokens=_max_tokens(body, limits),
        stops=_stops(body.get("stop")),
        stream=stream,
        include_usage=stream and _bool(options, "include_usage", False),
    )


def _refuse_sampling(body: dict) -> None:
    for name, (off, why) in _GREEDY_ONLY.items():
        value = body.get(name)
        if value is not None and value != off:
            raise bad_request(why, name, "unsupported_parameter")
    for name in _UNSUPPORTED:
        if body.get(name):
            raise bad_request(f"{name} is not supported by this server", name, "unsupported_parameter")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise bad_request(
            "only response_format {'type': 'text'} is supported", "response_format", "unsupported_parameter"
        )


def _message(message: Any, index: int, image_urls: list[str]) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be an object", where)
    role = message.get("role")
    if role not in ROLES:
        raise bad_request(f"{where}.role: got {role!r}, allowed: {', '.join(ROLES)}", f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return {"role": role, "content": [{"type": "text", "text": content}]}
    if not isinstance(content, list) or not content:
        raise bad_request(
            f"{where}.content must be a string or a non-empty list of parts", f"{where}.content"
        )
    parts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            if role != "user":
                raise bad_request(f"{at}: images are accepted in user messages only", at)
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            image_urls.append(url)
            parts.append({"type": "image"})
        else:
            raise bad_request(
                f"{at}: a part must be {{'type': 'text', 'text': ...}} or {{'type': 'image_url', ...}}", at
            )
    return {"role": role, "content": parts}


def _max_tokens(body: dict, limits: ServerLimits) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_request(f"{name}: got {value!r}, allowed: an integer >= 1", name)
        if value > limits.max_new_tokens:
            raise bad_request(
                f"{name}: got {value}; this server's limit is {limits.max_new_tokens}", name, "max_new_tokens"
            )
        return value
    return limits.max_new_tokens


def _stops(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return []
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOPS
    ):
        raise bad_request(f"stop must be a non-empty string or a list of up to {MAX_STOPS} of them", "stop")
    return stops


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false", name)
    return value
