# Two entry points do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before the project so that a machine holding a local CPU wheel uses it
# instead of resolving `torch>=2.4` to a multi-GB CUDA build. Override as needed,
# e.g. `make test TORCH='torch --index-url <your CPU index>'`.
TORCH ?= torch==2.13.0
DEMO_OUT ?= demo-cohort

.PHONY: demo test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/medweave synth --out $(DEMO_OUT) --patients 2000 --seed 0 --overwrite
	$(BIN)/medweave build $(DEMO_OUT)/cohort.yaml --out $(DEMO_OUT)/built --overwrite

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_omop.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
