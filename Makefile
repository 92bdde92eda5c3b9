# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
# `make demo` installs the core and what the demo uses (MLflow tracking); `make test` adds every optional part
# and the test tools (Ray, Streamlit, ONNX Runtime, selenium, ...) to the same virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint test-slow bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[tracking]"
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(TEST_STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/bcarena demo

test: lint
	$(BIN)/python -m pytest -q

# The lint gate: ruff (with a complexity limit) and mypy on the public API modules (pyproject's [tool.mypy]).
# mypy cannot follow setuptools' package-dir, so it reads the layers through links bcarena/<layer> -> <layer>/.
TYPECHECK_ROOT := build/typecheck/bcarena
LAYERS := envs recordings agents eval experiments

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p $(TYPECHECK_ROOT)
	for layer in $(LAYERS); do ln -sfn ../../../$$layer $(TYPECHECK_ROOT)/$$layer || exit 1; done
	$(BIN)/mypy

test-slow: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(TEST_STAMP)
	for b in env dataset train study matches serving ray service-swap int8 ab boxing pixel-agent dashboard; do $(BIN)/bcarena bench $$b --out runs/benchmarks/$$b.json || exit 1; done
