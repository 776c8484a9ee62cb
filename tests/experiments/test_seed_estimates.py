from slimvl.experiments.seed_estimates import SEED_ESTIMATES


def test_the_seed_table_rows_with_every_column() -> None:
    assert list(SEED_ESTIMATES) == ["base", "int8", "sparsify", "prune", "adaptive", "all"]
    assert SEED_ESTIMATES["base"] is None
    for name in list(SEED_ESTIMATES)[1:]:
        assert set(SEED_ESTIMATES[name]) == {"label", "memory_reduction", "speedup", "power", "accuracy"}
