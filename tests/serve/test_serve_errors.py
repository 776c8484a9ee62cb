"""Bad requests get the right 4xx in OpenAI's error shape, and the server answers the next good one;
the API key; the bounded queue; a client that goes stops its generation."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest
from PIL import Image

from slimvl.serve.limits import ServerLimits

GOOD_QUESTION = "What color is the circle?"


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.new("RGB", (64, 48), (200, 30, 30))


def _post(url: str, body, headers: dict | None = None) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return httpx.post(f"{url}/chat/completions", content=body, headers=headers, timeout=120)
    return httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=120)


def _good(server, image, user_turn) -> dict:
    return {"model": server.model, "messages": [user_turn(GOOD_QUESTION, image)], "max_tokens": 4}


def _image_part(url: str) -> dict:
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}],
    }


def test_bad_requests_get_their_4xx_and_the_server_stays_up(
    server, image, user_turn, media_dir, as_data_uri
) -> None:
    (media_dir / "notes.txt").write_text("not an image")
    huge = Image.new("RGB", (8000, 7500))  # 60 megapixels, a small PNG
    image.save(media_dir / "red.png")
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()
    good = _good(server, image, user_turn)
    cases = {
        "malformed JSON": (b'{"model": "x", "messages": [', 400, None),
        "not an object": ([1, 2], 400, None),
        "missing messages": ({"model": server.model}, 400, "messages"),
        "empty messages": ({"model": server.model, "messages": []}, 400, "messages"),
        "bad role": ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
        "broken base64": (
            {"messages": [_image_part("data:image/png;base64,@@@not-base64@@@")]},
            400,
            "messages.content.image_url",
        ),
        "truncated PNG": (
            {"messages": [_image_part(f"data:image/png;base64,{png}")]},
            400,
            "messages.content.image_url",
        ),
        "a text file as image": ({"messages": [_image_part("notes.txt")]}, 400, "messages.content.image_url"),
        "a file outside the media dir": (
            {"messages": [_image_part("../../etc/passwd")]},
            400,
            "messages.content.image_url",
        ),
        "a remote URL": (
            {"messages": [_image_part("https://example.com/cat.png")]},
            400,
            "messages.content.image_url",
        ),
        "60 megapixels": ({"messages": [_image_part(as_data_uri(huge))]}, 400, "messages.content.image_url"),
        "unknown model": ({**good, "model": "gpt-4o"}, 404, "model"),
        "negative max_tokens": ({**good, "max_tokens": -1}, 400, "max_tokens"),
        "max_tokens over the limit": ({**good, "max_tokens": 10**6}, 400, "max_tokens"),
        "sampling": ({**good, "temperature": 0.7}, 400, "temperature"),
        "n > 1": ({**good, "n": 2}, 400, "n"),
        "tools": ({**good, "tools": [{"type": "function"}]}, 400, "tools"),
        "bad stop": ({**good, "stop": [""]}, 400, "stop"),
        "too many images": ({"messages": [user_turn("?", *[image] * 9)]}, 400, "messages"),
        "assistant last": ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
    }
    for name, (body, status, param) in cases.items():
        response = _post(server.url, body)
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], name
        assert error["param"] == param, (name, error)
    assert "60000000 pixels" in _post(server.url, cases["60 megapixels"][0]).json()["error"]["message"]
    from_file = _post(server.url, {"messages": [_image_part("red.png")], "max_tokens": 4})
    assert from_file.status_code == 200, from_file.text
    response = _post(server.url, good)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]


def test_a_prompt_over_its_token_limit_is_refused(tiny, start_serving, image, user_turn) -> None:
    for server in start_serving(tiny, limits=ServerLimits(max_prompt_tokens=20)):
        response = _post(server.url, _good(server, image, user_turn))
        assert response.status_code == 400
        assert "max_prompt_tokens is 20" in response.json()["error"]["message"]
        text_only = {"messages": [{"role": "user", "content": "Hi?"}], "max_tokens": 2}
        assert _post(server.url, text_only).status_code == 200


def test_every_route_but_health_needs_the_key(tiny, start_serving, image, user_turn) -> None:
    for server in start_serving(tiny, api_key="sesame"):
        base = server.url.removesuffix("/v1")
        assert httpx.get(f"{base}/health").status_code == 200
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
            response = httpx.get(f"{server.url}/models", headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
            assert _post(server.url, _good(server, image, user_turn), headers).status_code == 401
        key = {"Authorization": "Bearer sesame"}
        assert httpx.get(f"{server.url}/models", headers=key).status_code == 200
        assert _post(server.url, _good(server, image, user_turn), key).status_code == 200
        assert httpx.get(f"{base}/nowhere", headers=key).json()["error"]["message"]


def test_a_full_queue_answers_503_with_retry_after(random_server, image, user_turn) -> None:
    """max_queue 0 and one long request running: a second is refused, then served once the first ends."""
    engine = random_server.app.state.engine
    hooks = random_server.slim.pipeline.hooks
    original = hooks.decode_step

    def slow(*args):  # 5 ms a step: the first request runs for a second
        time.sleep(0.005)
        return original(*args)

    long = {"messages": [user_turn(GOOD_QUESTION, image)], "max_tokens": 200}
    first = threading.Thread(target=_post, args=(random_server.url, long))
    limits = engine.limits
    engine.limits = ServerLimits(max_queue=0)
    hooks.decode_step = slow
    try:
        first.start()
        deadline = time.monotonic() + 30
        while engine.admitted == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = _post(random_server.url, {**long, "max_tokens": 2})
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"]["code"] == "queue_full"
        first.join()
        assert _post(random_server.url, {**long, "max_tokens": 2}).status_code == 200
    finally:
        engine.limits = limits
        del hooks.decode_step


def test_a_client_that_goes_stops_its_generation(random_server, image, user_turn) -> None:
    """A stream closed after its first piece: the generation ends within a few tokens (all of max_tokens
    1000 would take 5 s), the queue empties, and the server answers the next request."""
    engine = random_server.app.state.engine
    pipeline = random_server.slim.pipeline
    steps = []
    original = pipeline.hooks.decode_step

    def counting(*args):  # 5 ms a step: the whole answer would take 5 s, long after the client went
        steps.append(1)
        time.sleep(0.005)
        return original(*args)

    pipeline.hooks.decode_step = counting
    try:
        body = {"messages": [user_turn(GOOD_QUESTION, image)], "max_tokens": 1000, "stream": True}
        with httpx.stream(
            "POST", f"{random_server.url}/chat/completions", json=body, timeout=120
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break
        deadline = time.monotonic() + 30
        while engine.admitted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.admitted == 0 and len(steps) < 200
    finally:
        del pipeline.hooks.decode_step
    assert _post(random_server.url, {**body, "stream": False, "max_tokens": 2}).status_code == 200


def test_serve_command_refuses_bad_options_in_one_line(tmp_path, capsys) -> None:
    from slimvl.cli.main import main

    assert main(["serve", "builtin:tiny", "--allowed-media-dir", str(tmp_path / "none")]) != 0
    assert main(["serve", "builtin:tiny", "--max-queue", "-1"]) != 0
    assert main(["serve", "builtin:tiny", "--port", "70000"]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("slimvl: error: ") for line in lines)
    assert "--allowed-media-dir" in lines[0] and "max_queue" in lines[1] and "--port" in lines[2]
