"""The runtime controller: the mode it picks for simulated machine states, how savings combine, the memory
fit, determinism, reasons naming the deciding field, and validation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from slimvl.precision.controller import (
    MIN_VISUAL_KEEP,
    Controller,
    ControllerPolicy,
    Mode,
    ModelCosts,
    RequestNeeds,
    estimate_request_bytes,
)
from slimvl.precision.machine_state import MachineState

GIB = 2**30
MIB = 2**20
COSTS = ModelCosts(
    weight_bytes=2 * GIB,
    kv_bytes_per_token=112 * 1024,
    pixels_per_visual_token=1024,
    vision_bytes_per_patch=64 * 1024,
    default_max_pixels=16 * 2**20,
    min_pixels=64 * 1024,
)
CALM = MachineState(
    available_memory_bytes=12 * GIB,
    on_battery=False,
    battery_percent=80.0,
    temperature_c=55.0,
    critical_temperature_c=100.0,
    cpu_load=0.2,
    cpu_freq_ratio=0.9,
    logical_cpus=8,
)
ONE_IMAGE = RequestNeeds(images=1, image_pixels=1280 * 960, prompt_chars=120, max_new_tokens=64)
SAVING = ControllerPolicy(saving_visual_keep=0.5)  # the visual-token lever on (off by default)
SAVING_PIXELS = 1280 * 960 // 2  # half the request's own image


def decide(needs: RequestNeeds = ONE_IMAGE, policy: ControllerPolicy | None = None, **state: object) -> Mode:
    simulated = dataclasses.replace(CALM, **state)
    return Controller(COSTS, policy or SAVING, state_source=lambda: simulated).decide(needs)


def test_calm_machine_is_normal() -> None:
    mode = decide()
    assert (mode.name, mode.threads, mode.max_pixels, mode.visual_keep) == ("normal", None, None, 1.0)
    assert len(mode.reasons) == 1
    assert mode.reasons[0].startswith("normal state: ")
    for field in ("available_memory_bytes", "on_battery", "temperature_c 55", "cpu_load 0.20"):
        assert field in mode.reasons[0]
    assert mode.state == CALM.to_dict()


def test_low_battery_on_battery_saves() -> None:
    mode = decide(on_battery=True, battery_percent=15.0)
    assert mode.name == "battery_saver"
    assert (mode.threads, mode.max_pixels, mode.visual_keep) == (1, SAVING_PIXELS, 0.5)
    assert mode.reasons == (
        f"battery_percent 15 < 30 and on battery: 1 thread, max_pixels {SAVING_PIXELS},"
        " keep 50% of visual tokens",
    )


def test_low_battery_on_mains_is_normal() -> None:
    mode = decide(on_battery=False, battery_percent=15.0)
    assert (mode.name, mode.threads, mode.max_pixels, mode.visual_keep) == ("normal", None, None, 1.0)


@pytest.mark.parametrize("percent", [80.0, 30.0])
def test_on_battery_at_or_above_threshold_only_lowers_threads(percent: float) -> None:
    mode = decide(on_battery=True, battery_percent=percent)
    assert (mode.name, mode.threads, mode.max_pixels, mode.visual_keep) == ("on_battery", 1, None, 1.0)
    assert mode.reasons == (f"on_battery True, battery_percent {percent:g} >= 30: 1 thread",)


def test_on_battery_with_unknown_charge_only_lowers_threads() -> None:
    mode = decide(on_battery=True, battery_percent=None)
    assert (mode.name, mode.threads, mode.max_pixels, mode.visual_keep) == ("on_battery", 1, None, 1.0)
    assert mode.reasons == ("on_battery True, battery_percent unknown: 1 thread",)


def test_on_battery_threads_never_exceed_the_configured_count() -> None:
    policy = ControllerPolicy(saving_threads=4)
    on_battery = dataclasses.replace(CALM, on_battery=True, battery_percent=80.0)
    assert Controller(COSTS, policy, lambda: on_battery).decide(ONE_IMAGE).threads == 4
    assert Controller(COSTS, policy, lambda: on_battery, threads=2).decide(ONE_IMAGE).threads == 2


@pytest.mark.parametrize(("temperature", "hot"), [(89.9, False), (90.0, True), (97.0, True)])
def test_hot_against_the_critical_threshold(temperature: float, hot: bool) -> None:
    mode = decide(temperature_c=temperature, critical_temperature_c=100.0)
    assert mode.name == ("thermal" if hot else "normal")
    if hot:
        assert (mode.threads, mode.max_pixels, mode.visual_keep) == (1, SAVING_PIXELS, 0.5)
        assert mode.reasons == (
            f"temperature_c {temperature:g} >= critical_temperature_c 100 - hot_margin_c 10: 1 thread,"
            f" max_pixels {SAVING_PIXELS}, keep 50% of visual tokens",
        )


def test_critical_threshold_overrides_the_fixed_hot_temperature() -> None:
    assert decide(temperature_c=88.0, critical_temperature_c=105.0).name == "normal"
    assert decide(temperature_c=80.0, critical_temperature_c=85.0).name == "thermal"


@pytest.mark.parametrize(("temperature", "hot"), [(84.0, False), (85.0, True), (99.0, True)])
def test_hot_without_a_critical_threshold(temperature: float, hot: bool) -> None:
    mode = decide(temperature_c=temperature, critical_temperature_c=None)
    assert mode.name == ("thermal" if hot else "normal")
    if hot:
        assert mode.reasons[0].startswith(f"temperature_c {temperature:g} >= hot_temperature_c 85:")


def test_unknown_temperature_is_not_hot() -> None:
    assert decide(temperature_c=None, critical_temperature_c=None).name == "normal"


def test_busy_only_lowers_threads() -> None:
    mode = decide(cpu_load=0.93)
    assert (mode.name, mode.threads, mode.max_pixels, mode.visual_keep) == ("busy", 1, None, 1.0)
    assert mode.reasons == ("cpu_load 0.93 >= 0.85: 1 thread",)
    assert decide(cpu_load=0.84).name == "normal"


def test_saving_threads_never_exceed_the_configured_count() -> None:
    policy = ControllerPolicy(saving_threads=2)
    busy = dataclasses.replace(CALM, cpu_load=1.0)
    assert Controller(COSTS, policy, lambda: busy).decide(ONE_IMAGE).threads == 2
    assert Controller(COSTS, policy, lambda: busy, threads=1).decide(ONE_IMAGE).threads == 1


def big_request() -> RequestNeeds:
    return RequestNeeds(images=2, image_pixels=2 * 4000 * 3000, prompt_chars=300, max_new_tokens=256)


def test_low_memory_lowers_max_pixels_until_the_estimate_fits() -> None:
    needs, policy = big_request(), ControllerPolicy()
    available = 2 * GIB
    budget = available - policy.memory_headroom_bytes
    assert estimate_request_bytes(COSTS, needs, COSTS.default_max_pixels, 1.0) > budget
    mode = decide(needs, available_memory_bytes=available)
    assert mode.name == "low_memory"
    assert mode.max_pixels is not None
    assert COSTS.min_pixels < mode.max_pixels < COSTS.default_max_pixels
    assert mode.visual_keep == 1.0
    assert estimate_request_bytes(COSTS, needs, mode.max_pixels, mode.visual_keep) <= budget
    assert estimate_request_bytes(COSTS, needs, mode.max_pixels * 2, 1.0) > budget  # the largest that fits
    assert mode.threads is None
    assert mode.reasons[0].startswith("available_memory_bytes 2048 MiB - headroom 512 MiB < estimate")
    assert "may not fit" not in mode.reasons[0]


def test_low_memory_then_lowers_visual_keep() -> None:
    needs = RequestNeeds(
        images=4, image_pixels=4 * COSTS.default_max_pixels, prompt_chars=0, max_new_tokens=0
    )
    at_half_keep = estimate_request_bytes(COSTS, needs, COSTS.min_pixels, 0.5)
    at_quarter_keep = estimate_request_bytes(COSTS, needs, COSTS.min_pixels, 0.25)
    available = ControllerPolicy().memory_headroom_bytes + (at_half_keep + at_quarter_keep) // 2
    mode = decide(needs, available_memory_bytes=available)
    assert (mode.name, mode.max_pixels, mode.visual_keep) == ("low_memory", COSTS.min_pixels, 0.25)


def test_impossible_memory_gives_the_smallest_mode_without_raising() -> None:
    mode = decide(big_request(), available_memory_bytes=520 * MIB)
    assert (mode.name, mode.max_pixels, mode.visual_keep) == ("low_memory", COSTS.min_pixels, MIN_VISUAL_KEEP)
    assert "may not fit" in mode.reasons[0]
    assert "available_memory_bytes 520 MiB" in mode.reasons[0]


def test_text_only_request_that_cannot_fit_keeps_the_image_settings() -> None:
    needs = RequestNeeds(images=0, image_pixels=0, prompt_chars=30_000, max_new_tokens=4096)
    mode = decide(needs, available_memory_bytes=ControllerPolicy().memory_headroom_bytes + MIB)
    assert mode.name == "low_memory"
    assert mode.visual_keep == 1.0
    assert mode.max_pixels == COSTS.default_max_pixels
    assert "may not fit" in mode.reasons[0]


def test_unknown_memory_is_not_low() -> None:
    mode = decide(big_request(), available_memory_bytes=0)
    assert mode.name == "normal"
    assert "available_memory_bytes unknown" in mode.reasons[0]


def test_saving_mode_pixel_cap_can_make_the_request_fit() -> None:
    needs = RequestNeeds(images=1, image_pixels=COSTS.default_max_pixels, prompt_chars=0, max_new_tokens=0)
    policy = SAVING
    saving_pixels = COSTS.default_max_pixels // 2  # half of this request's image
    fits_at = estimate_request_bytes(COSTS, needs, saving_pixels, policy.saving_visual_keep)
    available = policy.memory_headroom_bytes + fits_at
    assert decide(needs, available_memory_bytes=available).name == "low_memory"
    mode = decide(needs, available_memory_bytes=available, on_battery=True, battery_percent=10.0)
    assert (mode.name, mode.max_pixels, mode.visual_keep) == ("battery_saver", saving_pixels, 0.5)


def test_combinations_take_the_most_saving_value_in_a_fixed_order() -> None:
    mode = decide(
        big_request(),
        on_battery=True,
        battery_percent=5.0,
        temperature_c=99.0,
        cpu_load=1.0,
        available_memory_bytes=2 * GIB,
    )
    assert mode.name == "battery_saver+thermal+busy+low_memory"
    assert mode.threads == 1
    assert mode.max_pixels is not None and mode.max_pixels < big_request().image_pixels // 2
    assert mode.visual_keep <= 0.5
    starts = ("battery_percent 5 < 30", "temperature_c 99 >=", "cpu_load 1.00 >=", "available_memory_bytes")
    assert [reason.startswith(start) for reason, start in zip(mode.reasons, starts, strict=True)] == [
        True
    ] * 4

    assert decide(temperature_c=99.0, cpu_load=0.9).name == "thermal+busy"
    assert decide(on_battery=True, battery_percent=5.0, temperature_c=99.0).name == "battery_saver+thermal"


def test_on_battery_combines_in_the_fixed_order() -> None:
    mode = decide(
        big_request(),
        on_battery=True,
        battery_percent=80.0,
        temperature_c=99.0,
        cpu_load=1.0,
        available_memory_bytes=2 * GIB,
    )
    assert mode.name == "on_battery+thermal+busy+low_memory"
    assert mode.threads == 1
    assert mode.max_pixels is not None and mode.max_pixels < big_request().image_pixels // 2
    assert mode.visual_keep <= 0.5
    starts = (
        "on_battery True, battery_percent 80 >= 30: 1 thread",
        "temperature_c 99 >=",
        "cpu_load 1.00 >=",
        "available_memory_bytes",
    )
    assert [reason.startswith(start) for reason, start in zip(mode.reasons, starts, strict=True)] == [
        True
    ] * 4

    busy = decide(on_battery=True, battery_percent=None, cpu_load=0.9)
    assert (busy.name, busy.threads, busy.max_pixels, busy.visual_keep) == ("on_battery+busy", 1, None, 1.0)
    low_memory = decide(big_request(), on_battery=True, battery_percent=50.0, available_memory_bytes=2 * GIB)
    assert low_memory.name == "on_battery+low_memory"
    assert low_memory.threads == 1
    assert low_memory.max_pixels is not None and low_memory.max_pixels < COSTS.default_max_pixels
    assert low_memory.reasons[0] == "on_battery True, battery_percent 50 >= 30: 1 thread"


def test_busy_and_low_memory_keep_each_others_values() -> None:
    mode = decide(big_request(), cpu_load=0.9, available_memory_bytes=2 * GIB)
    assert mode.name == "busy+low_memory"
    assert mode.threads == 1
    assert mode.max_pixels is not None and mode.max_pixels < COSTS.default_max_pixels


def test_same_needs_and_state_give_equal_modes() -> None:
    state = dataclasses.replace(CALM, on_battery=True, battery_percent=12.0, available_memory_bytes=2 * GIB)
    reads: list[MachineState] = []

    def source() -> MachineState:
        reads.append(state)
        return state

    controller = Controller(COSTS, state_source=source)
    first, second = controller.decide(big_request()), controller.decide(big_request())
    assert first == second
    assert first == Controller(COSTS, state_source=lambda: state).decide(big_request())
    assert len(reads) == 2  # one state reading per decision


def test_to_dict_is_json_ready_and_carries_the_state() -> None:
    mode = decide(cpu_load=0.9)
    data = json.loads(json.dumps(mode.to_dict()))
    assert data == {
        "name": "busy",
        "threads": 1,
        "max_pixels": None,
        "visual_keep": 1.0,
        "reasons": ["cpu_load 0.90 >= 0.85: 1 thread"],
        "state": {**CALM.to_dict(), "cpu_load": 0.9},
    }


def test_estimate_follows_the_formula() -> None:
    needs = RequestNeeds(images=2, image_pixels=3 * 2**20, prompt_chars=31, max_new_tokens=100)
    costs = dataclasses.replace(COSTS, kv_bytes_per_token=10, vision_bytes_per_patch=3)
    capped = 2 * 2**20  # two images capped at 1 Mi pixels each
    visual_tokens = capped // 1024 // 2
    expected = 10 * (visual_tokens + 10 + 16 + 100) + 3 * (capped * 4 // 1024)
    assert estimate_request_bytes(costs, needs, 2**20, 0.5) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("low_battery_percent", 120.0),
        ("hot_margin_c", -1.0),
        ("hot_temperature_c", 0.0),
        ("busy_cpu_load", 1.5),
        ("busy_cpu_load", float("nan")),
        ("memory_headroom_bytes", -1),
        ("memory_headroom_bytes", 1.5),
        ("saving_visual_keep", 0.0),
        ("saving_pixels_ratio", 2.0),
        ("saving_threads", 0),
        ("saving_threads", True),
    ],
)
def test_policy_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^ControllerPolicy\.{field}: got .*, allowed: "):
        ControllerPolicy(**{field: value})


def test_costs_needs_and_threads_are_validated() -> None:
    with pytest.raises(ValueError, match=r"^ModelCosts\.pixels_per_visual_token: got 0, allowed: "):
        dataclasses.replace(COSTS, pixels_per_visual_token=0)
    with pytest.raises(ValueError, match=r"^ModelCosts\.default_max_pixels: got 10, allowed: "):
        dataclasses.replace(COSTS, default_max_pixels=10)
    with pytest.raises(ValueError, match=r"^RequestNeeds\.images: got -1, allowed: "):
        RequestNeeds(images=-1, image_pixels=0, prompt_chars=0, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"^Controller\.threads: got 0, allowed: "):
        Controller(COSTS, threads=0)
