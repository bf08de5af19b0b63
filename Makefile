# Everything a fresh machine needs: `make train` and `make test` create .venv and install into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch that lies on this disk; other pins can pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install slurm-deps browser-deps train lint test test-all bench bench-scale bench-contention bench-parallel bench-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/cotresnet-train $(ARGS)

# ruff, configured in pyproject.toml (a second)
lint: $(STAMP)
	$(BIN)/ruff check .

# The fast set (everything not marked slow), two workers of one thread each: about 3 minutes.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" $(ARGS)

# Everything, SLURM included (what .ci/run calls).
test-all: lint slurm-deps browser-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup $(ARGS)

# The SLURM tests run a one-node cluster from Debian's slurm-wlm and munge. Installed when we are
# root with apt-get; elsewhere those tests skip and say why.
slurm-deps:
	@command -v slurmctld >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null 2>&1 ; } || \
	  echo "slurm-wlm/munge not installed: the SLURM tests will be skipped"

# The sweep report's page is checked in a real browser (Debian's chromium, headless): installed like SLURM.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 ; } || \
	  echo "chromium not installed: the browser test of report.html will be skipped"

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(ARGS)

# Cost curves of one step, one kernel evaluation and one W_COT evaluation across N, L, M (exponents, the
# default cadences' share): ~10 minutes on 2 cores; writes bench_scale.json and bench_scale.png. On a GPU
# node: make bench-scale ARGS=--gpu, or python3 scripts/bench_scale.py --gpu with a CUDA torch at hand
bench-scale: $(STAMP)
	$(BIN)/python scripts/bench_scale.py $(ARGS)

# A job alone and next to two other training jobs: a single run, a joblib worker, a SLURM job.
bench-contention: $(STAMP) slurm-deps
	$(BIN)/python scripts/bench_contention.py $(ARGS)

# Two ranks against one process (particle- and data-parallel), per-layer compute and gloo all-reduce times, and
# the step of (L, M) = (64, 2^24) projected onto 8, 64 and 512 GPUs (README "Many processes"): ~10 minutes
bench-parallel: $(STAMP)
	$(BIN)/python scripts/bench_parallel.py $(ARGS)

# On a GPU machine the venv gets torch==2.13.0 from PyPI, the CUDA build there. Where python3 already
# holds a CUDA torch and no index is reachable (an offline node): make bench-gpu PYTHON=python3
PYTHON ?= $(BIN)/python
# The bench rows on cuda:0, then the GPU target (1000 steps at (8192, 64, 64, 16384) and the diagnostics)
# and the cost curves at GPU sizes
bench-gpu: $(if $(filter $(BIN)/python,$(PYTHON)),$(STAMP))
	$(PYTHON) scripts/bench.py --gpu $(ARGS)
	$(PYTHON) scripts/bench_scale.py --gpu --json bench_scale_gpu.json --png bench_scale_gpu.png

clean:
	rm -rf $(VENV) outputs multirun
