import pytest

from slimvl.device.spec import CPU, DeviceError, choose_device, parse_simulated


def test_simulated_gpus() -> None:
    mx250 = parse_simulated("6.1:2GB")
    assert (mx250.kind, mx250.capability, mx250.free_bytes) == ("cuda", (6, 1), 2_000_000_000)
    h100 = parse_simulated("9.0:80GiB")
    assert h100.total_bytes == 80 * 1024**3 and h100.sm == "sm_90"
    with pytest.raises(DeviceError, match="MAJOR.MINOR:MEMORY"):
        parse_simulated("a lot")


def test_auto_without_a_gpu_chooses_the_cpu_and_says_why() -> None:
    device, line = choose_device("auto", gpus=[])
    assert device == CPU and line.startswith("device: cpu (auto: ")


def test_cuda_without_a_gpu_is_a_one_line_error() -> None:
    with pytest.raises(DeviceError, match="--device cuda: ") as caught:
        choose_device("cuda", gpus=[])
    assert "\n" not in str(caught.value)


def test_auto_takes_the_gpu_with_most_free_memory() -> None:
    small, large = parse_simulated("6.1:2GB"), parse_simulated("7.5:4GB")
    device, line = choose_device("auto", gpus=[small, large])
    assert device == large and "sm_75" in line and "auto" in line


def test_unknown_request() -> None:
    with pytest.raises(DeviceError, match="allowed: cpu, cuda, auto"):
        choose_device("tpu", gpus=[])


def test_which_wheels_run_on_pascal() -> None:
    from slimvl.device.spec import built_for

    cu126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    cu128 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
    assert built_for((6, 1), cu126) and not built_for((6, 1), cu128)
    assert built_for((8, 9), cu128) and built_for((12, 1), cu128)
