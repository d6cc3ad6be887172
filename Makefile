# pipesim: `make demo` and `make test` work on a fresh machine with nothing but Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Without an NVIDIA GPU, pin torch to the CPU build (a bare `torch` pulls a multi-GB CUDA build).
CONSTRAINTS := $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)
STAMP := $(VENV)/.installed

.PHONY: demo dashboard test test-fast lint format bench screenshots clean

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pipesim demo

dashboard: $(STAMP)
	$(BIN)/pipesim dashboard

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not distributed and not browser"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# The README's dashboard screenshots (docs/dashboard-*.png), taken by the browser test.
screenshots: $(STAMP)
	PIPESIM_SCREENSHOTS=docs $(BIN)/python -m pytest -q -m browser tests/dashboard/test_browser.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
