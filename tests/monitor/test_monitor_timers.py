import pytest

from slimvl.monitor import StageTimer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_stages_accumulate_and_count() -> None:
    wall, cpu = FakeClock(), FakeClock()
    timer = StageTimer(clock=wall, cpu_clock=cpu)
    with timer:
        with timer.stage("vision"):
            wall.advance(0.1)
        for _ in range(3):
            with timer.stage("decode"):
                wall.advance(0.02)
        cpu.advance(0.5)
    assert timer.stages_ms == pytest.approx({"vision": 100.0, "decode": 60.0})
    assert timer.stage_counts == {"vision": 1, "decode": 3}
    assert timer.wall_s == pytest.approx(0.16)
    assert timer.cpu_s == pytest.approx(0.5)


def test_stage_recorded_when_body_raises() -> None:
    wall = FakeClock()
    timer = StageTimer(clock=wall)
    with pytest.raises(ValueError), timer.stage("prefill"):
        wall.advance(0.25)
        raise ValueError
    assert timer.stages_ms == {"prefill": 250.0}


def test_span_requires_start() -> None:
    timer = StageTimer()
    with pytest.raises(RuntimeError):
        _ = timer.cpu_s
    with pytest.raises(RuntimeError):
        timer.stop()


def test_nested_stage_counts_only_in_its_own_total() -> None:
    wall = FakeClock()
    timer = StageTimer(clock=wall)
    with timer:
        with timer.stage("vision"):
            wall.advance(0.3)
            with timer.stage("sparsify"):
                wall.advance(0.05)
            wall.advance(0.1)
        with timer.stage("sparsify"):
            wall.advance(0.01)
    assert timer.stages_ms == pytest.approx({"vision": 400.0, "sparsify": 60.0})
    assert sum(timer.stages_ms.values()) == pytest.approx(timer.wall_s * 1e3)
