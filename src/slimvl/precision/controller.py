"""The runtime controller of adaptive precision: per request, picks an operating mode (threads, image
pixel cap, share of visual tokens kept) from what the request needs and the machine's state. A laptop
on battery should use fewer threads; one on a low battery, running hot, busy with other work or short of
memory should answer more cheaply rather than drain, throttle, contend or swap. The decision is plain
arithmetic on one state reading, deterministic, and says why in reasons that name the deciding state
field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from slimvl.precision.machine_state import MachineState, StateSource, read_machine_state

MIN_VISUAL_KEEP = 0.125
PROMPT_CHARS_PER_TOKEN = 3
TEMPLATE_TOKENS = 16  # chat-template tokens around the prompt
PATCHES_PER_VISUAL_TOKEN = 4  # a 2x2 merge of vision patches makes one visual token


def _require(where: str, value: object, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{where}: got {value!r}, allowed: {rule}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class RequestNeeds:
    """What one request asks for; `image_pixels` is the sum of width*height over its images as given."""

    images: int
    image_pixels: int
    prompt_chars: int
    max_new_tokens: int

    def __post_init__(self) -> None:
        for name in ("images", "image_pixels", "prompt_chars", "max_new_tokens"):
            value = getattr(self, name)
            _require(f"RequestNeeds.{name}", value, _is_int(value) and value >= 0, "an int >= 0")


@dataclass(frozen=True)
class ModelCosts:
    """Facts about the loaded model for the memory estimate. The weights (`weight_bytes`) are resident
    before a request starts, so the available memory already excludes them and the estimate does not
    count them."""

    weight_bytes: int
    kv_bytes_per_token: int
    pixels_per_visual_token: int
    vision_bytes_per_patch: int
    default_max_pixels: int
    min_pixels: int

    def __post_init__(self) -> None:
        for name in ("weight_bytes", "kv_bytes_per_token", "vision_bytes_per_patch"):
            value = getattr(self, name)
            _require(f"ModelCosts.{name}", value, _is_int(value) and value >= 0, "an int >= 0")
        for name in ("pixels_per_visual_token", "min_pixels"):
            value = getattr(self, name)
            _require(f"ModelCosts.{name}", value, _is_int(value) and value >= 1, "an int >= 1")
        value = self.default_max_pixels
        ok = _is_int(value) and value >= self.min_pixels
        _require("ModelCosts.default_max_pixels", value, ok, f"an int >= min_pixels ({self.min_pixels})")


@dataclass(frozen=True)
class ControllerPolicy:
    """Thresholds of the rules and the savings a saving mode applies."""

    low_battery_percent: float = 30.0
    hot_margin_c: float = 10.0
    hot_temperature_c: float = 85.0
    busy_cpu_load: float = 0.85
    memory_headroom_bytes: int = 512 * 2**20
    saving_visual_keep: float = (
        1.0  # every visual token kept: builtin:tiny's answers need them (docs/precision.md)
    )
    saving_pixels_ratio: float = 0.5
    saving_threads: int = 1

    def __post_init__(self) -> None:
        rules = (
            ("low_battery_percent", lambda v: _is_number(v) and 0 <= v <= 100, "a number in [0, 100]"),
            ("hot_margin_c", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
            ("hot_temperature_c", lambda v: _is_number(v) and 0 < v < 200, "a number in (0, 200)"),
            ("busy_cpu_load", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
            ("memory_headroom_bytes", lambda v: _is_int(v) and v >= 0, "an int >= 0"),
            (
                "saving_visual_keep",
                lambda v: _is_number(v) and MIN_VISUAL_KEEP <= v <= 1,
                f"a number in [{MIN_VISUAL_KEEP}, 1]",
            ),
            ("saving_pixels_ratio", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
            ("saving_threads", lambda v: _is_int(v) and v >= 1, "an int >= 1"),
        )
        for name, check, rule in rules:
            value = getattr(self, name)
            _require(f"ControllerPolicy.{name}", value, check(value), rule)


@dataclass(frozen=True)
class Mode:
    """The operating mode for one request. `threads` None leaves the configured count, `max_pixels` None
    the processor's default; `state` is the MachineState the decision read, as a dict."""

    name: str
    threads: int | None
    max_pixels: int | None
    visual_keep: float
    reasons: tuple[str, ...]
    state: dict[str, Any] = field(hash=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["reasons"] = list(self.reasons)
        return data


def estimate_request_bytes(
    costs: ModelCosts, needs: RequestNeeds, max_pixels: int, visual_keep: float
) -> int:
    """Memory one request needs beyond the weights: its KV cache and the vision encoder's activations,
    with the images capped at `max_pixels` each (the caller gives only their sum, so the sum is capped
    at images * max_pixels) and `visual_keep` of the visual tokens kept."""
    pixels = min(needs.image_pixels, needs.images * max_pixels)
    patches = pixels * PATCHES_PER_VISUAL_TOKEN // costs.pixels_per_visual_token
    visual_tokens = int(pixels // costs.pixels_per_visual_token * visual_keep)
    tokens = (
        visual_tokens + needs.prompt_chars // PROMPT_CHARS_PER_TOKEN + TEMPLATE_TOKENS + needs.max_new_tokens
    )
    return costs.kv_bytes_per_token * tokens + costs.vision_bytes_per_patch * patches


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _keep(visual_keep: float) -> str:
    return f"keep {visual_keep * 100:g}% of visual tokens"


def _threads(threads: int) -> str:
    return f"{threads} thread" + ("" if threads == 1 else "s")


class Controller:
    """Decides the Mode of each request from one reading of `state_source`. `threads` is the configured
    thread count: a saving mode never asks for more."""

    def __init__(
        self,
        costs: ModelCosts,
        policy: ControllerPolicy = ControllerPolicy(),
        state_source: StateSource = read_machine_state,
        threads: int | None = None,
    ) -> None:
        ok = threads is None or (_is_int(threads) and threads >= 1)
        _require("Controller.threads", threads, ok, "None or an int >= 1")
        self.costs = costs
        self.policy = policy
        self.state_source = state_source
        self.threads = threads
        self._saving_threads = (
            policy.saving_threads if threads is None else min(policy.saving_threads, threads)
        )

    def decide(self, needs: RequestNeeds) -> Mode:
        state = self.state_source()
        policy = self.policy
        names: list[str] = []
        reasons: list[str] = []
        threads: int | None = None
        max_pixels: int | None = None
        visual_keep = 1.0

        # Modes are named in a fixed order: battery_saver, on_battery, thermal, busy, low_memory
        # (battery_saver and on_battery exclude each other).
        causes: list[tuple[str, str]] = []
        battery_cause: str | None = None
        if state.on_battery:
            percent = state.battery_percent
            if percent is not None and percent < policy.low_battery_percent:
                causes.append(
                    (
                        "battery_saver",
                        f"battery_percent {percent:g} < {policy.low_battery_percent:g} and on battery",
                    )
                )
            else:
                shown = "unknown" if percent is None else f"{percent:g} >= {policy.low_battery_percent:g}"
                battery_cause = f"on_battery True, battery_percent {shown}"
        hot = self._hot(state)
        if hot is not None:
            causes.append(("thermal", hot))
        if causes:
            threads, max_pixels = self._saving_threads, self._saving_pixels(needs)
            visual_keep = policy.saving_visual_keep
            savings = f"{_threads(threads)}, max_pixels {max_pixels}, {_keep(visual_keep)}"
            for name, cause in causes:
                names.append(name)
                reasons.append(f"{cause}: {savings}")
        if battery_cause is not None:
            # On battery with enough charge: fewer threads draw less power; nothing else changes.
            threads = self._saving_threads
            names.insert(0, "on_battery")
            reasons.insert(0, f"{battery_cause}: {_threads(threads)}")
        if state.cpu_load >= policy.busy_cpu_load:
            threads = self._saving_threads
            names.append("busy")
            reasons.append(f"cpu_load {state.cpu_load:.2f} >= {policy.busy_cpu_load:g}: {_threads(threads)}")
        fitted = self._fit_memory(needs, state, max_pixels or self.costs.default_max_pixels, visual_keep)
        if fitted is not None:
            max_pixels, visual_keep, reason = fitted
            names.append("low_memory")
            reasons.append(reason)
        if not names:
            names.append("normal")
            reasons.insert(0, self._normal(state))
        return Mode(
            name="+".join(names),
            threads=threads,
            max_pixels=max_pixels,
            visual_keep=visual_keep,
            reasons=tuple(reasons),
            state=state.to_dict(),
        )

    def _saving_pixels(self, needs: RequestNeeds) -> int | None:
        """The per-image pixel cap of a saving mode: ``saving_pixels_ratio`` of the request's own images
        (their mean area, within the processor's cap), never below ``min_pixels``; None without images."""
        if needs.images == 0 or needs.image_pixels == 0:
            return None
        per_image = min(self.costs.default_max_pixels, needs.image_pixels // needs.images)
        return max(self.costs.min_pixels, int(per_image * self.policy.saving_pixels_ratio))

    def _hot(self, state: MachineState) -> str | None:
        """The reason the machine counts as hot, or None."""
        temperature, critical, policy = state.temperature_c, state.critical_temperature_c, self.policy
        if temperature is None:
            return None
        if critical is not None:
            if temperature >= critical - policy.hot_margin_c:
                return (
                    f"temperature_c {temperature:g} >= critical_temperature_c {critical:g}"
                    f" - hot_margin_c {policy.hot_margin_c:g}"
                )
            return None
        if temperature >= policy.hot_temperature_c:
            return f"temperature_c {temperature:g} >= hot_temperature_c {policy.hot_temperature_c:g}"
        return None

    def _fit_memory(
        self, needs: RequestNeeds, state: MachineState, max_pixels: int, visual_keep: float
    ) -> tuple[int, float, str] | None:
        """Lower the pixel cap, then the share of visual tokens kept, by halving until the request fits the
        available memory less the headroom. None when it fits as it is (or the memory is unknown)."""
        if state.available_memory_bytes <= 0:
            return None
        budget = state.available_memory_bytes - self.policy.memory_headroom_bytes
        estimate = estimate_request_bytes(self.costs, needs, max_pixels, visual_keep)
        if estimate <= budget:
            return None
        cause = (
            f"available_memory_bytes {_mib(state.available_memory_bytes)}"
            f" - headroom {_mib(self.policy.memory_headroom_bytes)} < estimate {_mib(estimate)}"
        )
        pixels, keep = max_pixels, visual_keep
        has_images = needs.images > 0 and needs.image_pixels > 0
        while estimate > budget and has_images:
            if pixels > self.costs.min_pixels:
                pixels = max(pixels // 2, self.costs.min_pixels)
            elif keep > MIN_VISUAL_KEEP:
                keep = max(keep / 2, MIN_VISUAL_KEEP)
            else:
                break
            estimate = estimate_request_bytes(self.costs, needs, pixels, keep)
        chosen = f"max_pixels {max_pixels} -> {pixels}, {_keep(keep)}"
        if estimate > budget:
            return pixels, keep, f"{cause}: smallest mode ({chosen}) may not fit, estimate {_mib(estimate)}"
        return pixels, keep, f"{cause}: {chosen}, estimate {_mib(estimate)}"

    def _normal(self, state: MachineState) -> str:
        memory = "unknown" if state.available_memory_bytes <= 0 else _mib(state.available_memory_bytes)
        temperature = "unknown" if state.temperature_c is None else f"{state.temperature_c:g}"
        battery = "unknown" if state.battery_percent is None else f"{state.battery_percent:g}"
        return (
            f"normal state: available_memory_bytes {memory}, on_battery {state.on_battery},"
            f" battery_percent {battery}, temperature_c {temperature}, cpu_load {state.cpu_load:.2f}"
        )
