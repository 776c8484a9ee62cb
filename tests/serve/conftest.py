"""A real server on a free loopback port, in a thread of the test process, serving builtin:tiny."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

import slimvl
from slimvl.api import SlimModel
from slimvl.serve.app import create_app
from slimvl.serve.limits import ServerLimits

MODEL = "builtin:tiny"


@dataclass
class Server:
    url: str  # ends in /v1
    slim: SlimModel
    app: object
    model: str = MODEL  # the served model's id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return server, thread


@pytest.fixture(scope="session")
def tiny() -> SlimModel:
    return slimvl.load(MODEL, threads=1)


def serve(slim: SlimModel, tmp_dir: Path | None = None, **options) -> Iterator[Server]:
    limits = options.pop("limits", ServerLimits())
    app = create_app(slim, MODEL, limits, allowed_media_dir=tmp_dir, **options)
    port = free_port()
    server, thread = start_server(app, port)
    try:
        yield Server(f"http://127.0.0.1:{port}/v1", slim, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def server(tiny: SlimModel, media_dir: Path) -> Iterator[Server]:
    yield from serve(tiny, media_dir)


@pytest.fixture(scope="module")
def random_server(small_checkpoint: Path) -> Iterator[Server]:
    """The small random checkpoint: its answers run to max_tokens, long enough to cut."""
    yield from serve(slimvl.load(str(small_checkpoint), threads=1))


@pytest.fixture(scope="session")
def start_serving():
    """serve(slim, media_dir=None, **create_app options) -> an iterator yielding a running Server."""
    return serve


@pytest.fixture(scope="session")
def user_turn():
    """user_turn(text, *images) -> an OpenAI user message, the images as data URIs before the text."""
    return user_message


@pytest.fixture(scope="session")
def as_data_uri():
    return data_uri


def data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def user_message(text: str, *images: Image.Image) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": data_uri(im)}} for im in images]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}
