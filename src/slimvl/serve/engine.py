"""One model, one request at a time: requests wait in a bounded queue for the model's thread.

Admission is counted in the event loop: one running plus `max_queue` waiting; the next is refused with
503 and Retry-After. A request leaves the count when its generation really ends (not when its client
goes), so the bound holds for the model's thread. A request whose client has gone is cancelled: its
generation stops at the next token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from slimvl.api import SlimModel
from slimvl.errors import InputError
from slimvl.monitor import RequestMetrics
from slimvl.serve.chat import ChatRequest
from slimvl.serve.errors import APIError, bad_request
from slimvl.serve.limits import ServerLimits
from slimvl.serve.text_stream import AnswerText

RETRY_AFTER_S = 5


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (end of answer or a stop sequence) or "length"
    prompt_tokens: int
    completion_tokens: int
    metrics: RequestMetrics


def model_thread() -> ThreadPoolExecutor:
    """The one thread a served model runs in. Load the model in it too (`executor.submit(load, ...)`):
    a model run from another thread than the one that loaded it decoded ~25% slower here (its
    kernels' packed weights were first touched by the loading thread's OpenMP team)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimvl-model")


class Engine:
    def __init__(
        self, slim: SlimModel, limits: ServerLimits, executor: ThreadPoolExecutor | None = None
    ) -> None:
        self.slim, self.limits = slim, limits
        self.executor = executor or model_thread()
        self.admitted = 0

    def admit(self) -> None:
        """Count one more request in, or refuse it (503) when the queue is full. Event loop only."""
        if self.admitted >= self.limits.max_queue + 1:
            raise APIError(
                503,
                f"the server is busy: {self.admitted} requests are running or queued; retry later",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.admitted += 1

    def submit(
        self, request: ChatRequest, cancelled: threading.Event, on_text: Callable[[str], None] | None = None
    ) -> Future:
        """Queue `request` (already admitted) on the model's thread; `on_text` gets each piece of the
        answer as it becomes final, and "" at the first token if it has no text yet (from that thread)."""
        loop = asyncio.get_running_loop()
        future = self.executor.submit(self._generate, request, cancelled, on_text)
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._release))
        return future

    def _release(self) -> None:
        self.admitted -= 1

    def _generate(
        self, request: ChatRequest, cancelled: threading.Event, on_text: Callable[[str], None] | None
    ) -> Completion | None:
        pipeline = self.slim.pipeline
        answer_text = AnswerText(pipeline.preprocessor.decode, pipeline.eos_token_ids, request.stops)

        generated = 0

        def on_token(token: int) -> bool:
            nonlocal generated
            generated += 1
            going = answer_text.add(token)
            piece = answer_text.delta()
            if on_text is not None and (piece or generated == 1):  # the first token is news even without text
                on_text(piece)
            return going and not cancelled.is_set()

        if cancelled.is_set():  # its client went while it waited
            return None
        try:
            answer = pipeline(
                request.images,
                request.conversation,
                max_new_tokens=request.max_tokens,
                on_token=on_token,
                max_prompt_tokens=self.limits.max_prompt_tokens,
            )
        except InputError as exc:
            raise bad_request(str(exc), "messages") from None
        rest = answer_text.finish()
        if rest and on_text is not None:
            on_text(rest)
        ended_by_model = answer.token_ids[-1] in pipeline.eos_token_ids or answer_text.stopped
        return Completion(
            text=answer_text.text,
            finish_reason="stop" if ended_by_model else "length",
            prompt_tokens=answer.metrics.prompt_tokens,
            completion_tokens=len(answer.token_ids),
            metrics=answer.metrics,
        )

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
