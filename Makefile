# `make demo` and `make test` work on a fresh machine: the venv is created when missing and
# the CPU build of torch is pinned by constraints/cpu.txt, so pip never resolves a CUDA torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints/cpu.txt
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test install install-test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints/cpu.txt
	$(PIP) -q torch==2.13.0
	$(PIP) -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -q -e '.[test,tensorboard]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/trainwell fit

test: install-test
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: install
	$(BIN)/python benchmarks/overhead.py

lint: install-test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
