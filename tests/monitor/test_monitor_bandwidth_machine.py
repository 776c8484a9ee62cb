import torch

from slimvl.monitor import machine_info, measure_read_bandwidth

MACHINE_KEYS = {
    "cpu_model",
    "physical_cores",
    "logical_cores",
    "usable_cpus",
    "isa_flags",
    "total_memory_bytes",
    "torch_version",
    "torch_cpu_capability",
    "torch_threads",
    "python_version",
    "transformers_version",
    "os",
}


def test_bandwidth_small_buffer() -> None:
    threads_before = torch.get_num_threads()
    result = measure_read_bandwidth(size_bytes=64 * 1024**2, repeats=2, threads=1)
    assert torch.get_num_threads() == threads_before
    assert result.threads == 1
    assert result.size_bytes == 64 * 1024**2
    assert result.method in result.per_method
    assert result.gbps == max(result.per_method.values())
    assert 0.1 < result.gbps < 5000


def test_machine_info_keys() -> None:
    info = machine_info()
    assert MACHINE_KEYS <= info.keys()
    assert info["logical_cores"] >= 1
    assert info["total_memory_bytes"] > 0
    assert info["torch_version"] == torch.__version__


def test_machine_info_parses_cpuinfo(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma avx512f amx_tile amx_int8\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: sse\n"
    )
    info = machine_info(cpuinfo_path=cpuinfo)
    assert info["cpu_model"] == "Test CPU 9000"
    assert info["isa_flags"] == ["avx2", "fma", "avx512f", "amx_tile", "amx_int8"]
