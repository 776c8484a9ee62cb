PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench bench-scorers bench-prune bench-precision clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/slimvl demo

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

# The standard scenario on a 2B-sized model: slimvl's int8, with and without 60% visual token
# sparsification, beside its peers (about 30 minutes on 2 cores). Rows that do not fit in memory
# together run in a later wave; the first rows listed (int8, int8+sparsify, hf-fp32, OpenVINO) share one.
BENCH_OUT ?= benchmarks/results/bench_2b_peers
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,peers]'
	test -x .venv-openvino/bin/python || scripts/setup_openvino.sh
	test -f out/2b-int8/slimvl.json || $(BIN)/slimvl optimize builtin:2b-shape --recipe int8 -o out/2b-int8
	test -f out/2b-int8-sparsify/slimvl.json || \
		$(BIN)/slimvl optimize builtin:2b-shape --recipe benchmarks/recipes/int8-sparsify.yaml -o out/2b-int8-sparsify
	$(BIN)/slimvl bench builtin:2b-shape --recipe out/2b-int8 --recipe out/2b-int8-sparsify \
		--peers hf-fp32,openvino-int8,openvino-int8-prune60,openvino-int8-f32,hf-bf16,torchao-int8 \
		--json-out $(BENCH_OUT).json --md-out $(BENCH_OUT).md --plot $(BENCH_OUT).png

bench-scorers: $(STAMP)
	test -f out/2b-int8/slimvl.json || $(BIN)/slimvl optimize builtin:2b-shape --recipe int8 -o out/2b-int8
	test -f out/2b-int8-sparsify/slimvl.json || \
		$(BIN)/slimvl optimize builtin:2b-shape --recipe benchmarks/recipes/int8-sparsify.yaml -o out/2b-int8-sparsify
	test -f out/2b-int8-sparsify-distilled/slimvl.json || $(BIN)/slimvl optimize builtin:2b-shape \
		--recipe benchmarks/recipes/int8-sparsify-distilled.yaml -o out/2b-int8-sparsify-distilled
	test -f out/2b-int8-sparsify-vision/slimvl.json || $(BIN)/slimvl optimize builtin:2b-shape \
		--recipe benchmarks/recipes/int8-sparsify-vision.yaml -o out/2b-int8-sparsify-vision
	$(BIN)/slimvl bench builtin:2b-shape --recipe out/2b-int8 --recipe out/2b-int8-sparsify \
		--recipe out/2b-int8-sparsify-distilled --recipe out/2b-int8-sparsify-vision --runs 9 \
		--json-out benchmarks/results/bench_2b_sparsify_scorers.json \
		--md-out benchmarks/results/bench_2b_sparsify_scorers.md --plot benchmarks/results/bench_2b_sparsify_scorers.png

# Structured pruning (MLP channels) with int8 at three ratios against int8 alone, and int8 applied at load
# time against its optimized directory; then MLP channels with decoder head groups or whole decoder layers,
# on builtin:2b-shape (about an hour on 2 cores).
bench-prune: $(STAMP)
	test -f out/2b-int8/slimvl.json || $(BIN)/slimvl optimize builtin:2b-shape --recipe int8 -o out/2b-int8
	for r in 30 50 60; do test -f out/2b-int8-channels$$r/slimvl.json || $(BIN)/slimvl optimize builtin:2b-shape \
		--recipe benchmarks/recipes/int8-channels$$r.yaml -o out/2b-int8-channels$$r || exit 1; done
	$(BIN)/slimvl bench builtin:2b-shape --recipe int8 --recipe out/2b-int8 --recipe out/2b-int8-channels30 \
		--recipe out/2b-int8-channels50 --recipe out/2b-int8-channels60 --runs 5 \
		--json-out benchmarks/results/bench_2b_prune_channels.json \
		--md-out benchmarks/results/bench_2b_prune_channels.md --plot benchmarks/results/bench_2b_prune_channels.png
	for r in channels30-heads25 channels30-layers3; do test -f out/2b-int8-$$r/slimvl.json || $(BIN)/slimvl optimize \
		builtin:2b-shape --recipe benchmarks/recipes/int8-$$r.yaml -o out/2b-int8-$$r || exit 1; done
	$(BIN)/slimvl bench builtin:2b-shape --recipe out/2b-int8 --recipe out/2b-int8-channels30 \
		--recipe out/2b-int8-channels30-heads25 --recipe out/2b-int8-channels30-layers3 --recipe out/2b-int8-channels50 \
		--runs 5 --json-out benchmarks/results/bench_2b_prune_heads_layers.json \
		--md-out benchmarks/results/bench_2b_prune_heads_layers.md --plot benchmarks/results/bench_2b_prune_heads_layers.png

# Adaptive precision on builtin:2b-shape: the int4 kernel against fbgemm int8 on the decoder's decode and
# prefill shapes, then a mixed int4/int8 plan (benchmarks/recipes/mixed-int4.yaml) against int8 in one
# bench run (about 40 minutes on 2 cores).
bench-precision: $(STAMP)
	$(BIN)/python benchmarks/int4_kernel.py --rounds 9 --out benchmarks/results/int4_kernel_2b.json
	test -f out/2b-int8/slimvl.json || $(BIN)/slimvl optimize builtin:2b-shape --recipe int8 -o out/2b-int8
	test -f out/2b-mixed-int4/slimvl.json || $(BIN)/slimvl optimize builtin:2b-shape \
		--recipe benchmarks/recipes/mixed-int4.yaml -o out/2b-mixed-int4
	$(BIN)/slimvl bench builtin:2b-shape --recipe out/2b-int8 --recipe out/2b-mixed-int4 --runs 7 \
		--json-out benchmarks/results/bench_2b_mixed_int4.json \
		--md-out benchmarks/results/bench_2b_mixed_int4.md --plot benchmarks/results/bench_2b_mixed_int4.png

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info
