# Quick start: `make demo` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch, pinned and installed before the package so that its `torch>=2.2`
# requirement is already met (an unpinned torch can pull a multi-GB CUDA build).
# This project's machines and CI find a local CPU wheel for the pin; from PyPI on
# Linux x86-64 the pin is the CUDA build, so elsewhere ask PyTorch's CPU index:
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# Override for a GPU machine, e.g. `make test TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed
LINT_STAMP := $(VENV)/.lint-installed

.PHONY: venv demo test lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,dask,mnist]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo_peaks.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff over the package, tests, benchmarks, examples and docs (version pinned in the lint extra)
$(LINT_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[lint]"
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/stability.py

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

# The HTML site in docs/_build/html (runs the gallery examples; warnings are errors).
docs: $(DOCS_STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/auto_examples docs/generated docs/sg_execution_times.rst
