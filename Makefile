# Two entry points do all set-up on a fresh machine (Python + pip + the torch CPU wheel):
#   make demo   installs into .venv and runs a simulated federation on synthetic data
#   make test   installs into .venv and runs the test suite (what .ci/run calls)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench privacy-utility clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedrec simulate --out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

privacy-utility: $(STAMP)
	$(BIN)/fedrec experiment sweep simulations/experiments/privacy_utility.toml

bench: $(STAMP)
	$(BIN)/python benchmarks/simulation_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
