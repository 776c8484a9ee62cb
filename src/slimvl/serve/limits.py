"""What one server accepts: the per-request limits and the queue's length."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServerLimits:
    """``max_queue``: requests waiting behind the one running (more get 503 + Retry-After);
    ``max_images`` per request; ``max_image_pixels`` of each image as sent (before resizing);
    ``max_prompt_tokens`` of the rendered prompt, image tokens included; ``max_new_tokens``: the largest
    ``max_tokens`` allowed, and the default; ``max_request_bytes`` of a request body."""

    max_queue: int = 8
    max_images: int = 8
    max_image_pixels: int = 40_000_000
    max_prompt_tokens: int = 16_384
    max_new_tokens: int = 1024
    max_request_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            minimum = 0 if field.name == "max_queue" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"ServerLimits.{field.name}: got {value!r}, allowed: an int >= {minimum}")
