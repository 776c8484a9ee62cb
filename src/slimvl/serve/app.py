"""The HTTP application: ``POST /v1/chat/completions`` (plain or streamed as server-sent events),
``GET /v1/models``, ``GET /health``. Every error is a JSON body in OpenAI's shape; no request can bring
the server down. With an API key, every route but ``/health`` needs ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from slimvl.api import SlimModel
from slimvl.serve.chat import ChatRequest, parse_chat
from slimvl.serve.engine import Completion, Engine
from slimvl.serve.errors import APIError, bad_request
from slimvl.serve.limits import ServerLimits
from slimvl.serve.media import MediaReader

DISCONNECT_POLL_S = 0.25
_DONE = object()


def create_app(
    slim: SlimModel,
    served_model: str,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    allowed_media_dir: Path | None = None,
    executor: ThreadPoolExecutor | None = None,
) -> FastAPI:
    """The app serving `slim` as `served_model`; `executor`: the thread `slim` was loaded in
    (`engine.model_thread`), where its requests then run."""
    limits = limits or ServerLimits()
    engine = Engine(slim, limits, executor)
    media = MediaReader(limits.max_image_pixels, allowed_media_dir)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="slimvl", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return await api_error(_request, APIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return await api_error(_request, APIError(500, f"internal error: {type(exc).__name__}: {exc}"))

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                error = APIError(
                    401, "a valid API key is needed: Authorization: Bearer KEY", code="invalid_api_key"
                )
                return JSONResponse(error.body(), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": served_model, "object": "model", "created": created, "owned_by": "slimvl"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _json_body(request, limits.max_request_bytes)
        chat = await asyncio.to_thread(parse_chat, body, served_model, limits, media)
        engine.admit()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if chat.stream:
            return await _stream(request, engine, chat, completion_id, served_model)
        cancelled = threading.Event()
        future = asyncio.wrap_future(engine.submit(chat, cancelled))
        try:
            while not future.done():
                await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
                if not future.done() and await request.is_disconnected():
                    cancelled.set()
            completion: Completion | None = future.result()
        finally:
            cancelled.set()
        if completion is None:
            raise bad_request("the client closed the request before it started")
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "finish_reason": completion.finish_reason,
                }
            ],
            "usage": _usage(completion),
            "slimvl": _timings(completion),
        }

    return app


async def _json_body(request: Request, max_bytes: int) -> object:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(
            413,
            f"the request body is {declared} bytes; max_request_bytes is {max_bytes}",
            code="max_request_bytes",
        )
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise APIError(
                413, f"the request body exceeds max_request_bytes ({max_bytes})", code="max_request_bytes"
            )
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None


async def _stream(
    request: Request, engine: Engine, chat: ChatRequest, completion_id: str, model: str
) -> StreamingResponse:
    """Start generating and answer with the event stream once the first token is out: its first event
    (the assistant role) goes at that moment; an error before it is an ordinary error response."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()
    future = engine.submit(chat, cancelled, lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece))
    future.add_done_callback(lambda _f: loop.call_soon_threadsafe(pieces.put_nowait, _DONE))
    created = int(time.time())

    def chunk(delta: dict, finish_reason: str | None = None, usage: dict | None = None) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            if usage is None
            else [],
        }
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    try:
        first = await _next_piece(pieces, request, cancelled)
    except BaseException:
        cancelled.set()
        raise
    if first is _DONE and future.exception() is not None:
        raise future.exception()

    async def events() -> AsyncIterator[str]:
        try:
            yield chunk({"role": "assistant", "content": ""})
            piece = first
            while piece is not _DONE:
                if piece:
                    yield chunk({"content": piece})
                piece = await _next_piece(pieces, request, cancelled)
            error = future.exception()
            if error is not None:
                failure = error if isinstance(error, APIError) else APIError(500, f"internal error: {error}")
                yield f"data: {json.dumps(failure.body())}\n\n"
            elif (completion := future.result()) is not None:
                yield chunk({}, completion.finish_reason)
                if chat.include_usage:
                    yield chunk({}, usage=_usage(completion) | {"slimvl": _timings(completion)})
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _next_piece(pieces: asyncio.Queue, request: Request, cancelled: threading.Event) -> object:
    """The next piece of the answer (or _DONE); a client gone meanwhile cancels the generation. The
    client is checked before each piece (pieces can come faster than any poll) and while waiting."""
    while True:
        if not cancelled.is_set() and await request.is_disconnected():
            cancelled.set()
        try:
            return await asyncio.wait_for(pieces.get(), timeout=DISCONNECT_POLL_S)
        except TimeoutError:
            continue


def _usage(completion: Completion) -> dict:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def _timings(completion: Completion) -> dict:
    metrics = completion.metrics
    return {
        "ttft_ms": metrics.ttft_ms,
        "stages_ms": dict(metrics.stages_ms),
        "decode_tokens_per_s": metrics.decode_tok_s,
        "visual_tokens": metrics.visual_tokens,
        "visual_tokens_kept": metrics.visual_tokens_kept,
    }
