# Everything a fresh machine needs: `make train` and `make test` create .venv and install into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch that lies on this disk; other pins can pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install train test bench bench-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/cotresnet-train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(ARGS)

bench-gpu: $(STAMP)
	$(BIN)/python scripts/bench.py --gpu $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun
