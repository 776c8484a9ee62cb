from slimvl.bench.ablation import ABLATION_PRESETS
from slimvl.experiments.seed_estimates import SEED_ESTIMATES


def test_every_ablation_row_has_its_seed_estimate() -> None:
    assert list(SEED_ESTIMATES) == [name for name, _ in ABLATION_PRESETS]
    assert SEED_ESTIMATES["base"] is None
