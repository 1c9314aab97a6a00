# The two commands of the quick start. Both create .venv (once) and install studybench into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install lint

$(BIN)/studybench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/studybench

install: $(BIN)/studybench

## demo: run the quickstart study (results/) and build its report (reports/quickstart/)
demo: install
	$(BIN)/studybench run studies/quickstart.yaml
	$(BIN)/studybench report studies/quickstart.yaml

## test: the whole test suite
test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check studybench tests benchmarks
	$(BIN)/ruff format --check studybench tests benchmarks
