"""Hardware profiles: environment caps that make this machine's kernels behave like a target CPU."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


PROFILES: dict[str, Profile] = {
    "native": Profile("native", notes=("kernels dispatch on this machine's own CPU features",)),
    "i5-10210u": Profile(
        "i5-10210u",
        env={"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
        notes=(
            "ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 cap ATen's and oneDNN's kernels at the "
            "target's AVX2 + FMA",
            "not governed by these caps: fbgemm (torch.ops.quantized.*) and torch._int_mm dispatch on this "
            "CPU's real features (VNNI/AVX-512 where present), so their figures are optimistic for the target",
            "not governed: OpenVINO cannot be capped at AVX2 here (its compile fails); openvino-* rows run "
            "on the native ISA",
        ),
    ),
}

PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"profile: got {name!r}, allowed: {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]
