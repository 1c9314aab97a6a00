# The two commands of the quick start. Both create .venv (once) and install studybench into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast install lint reports

$(BIN)/studybench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/studybench

install: $(BIN)/studybench

## demo: run the quickstart study (results/mlflow.db) and build its report in results/reports/quickstart/
## (git-ignored: the demo never rewrites the committed reports/; `make reports` does that on purpose)
## (DEMO_FLAGS="--profile smoke": the same in seconds, as tests/test_end_to_end.py runs it)
DEMO_REPORT := results/reports/quickstart
DEMO_FLAGS ?=
demo: install
	$(BIN)/studybench run studies/quickstart.yaml $(DEMO_FLAGS)
	$(BIN)/studybench report studies/quickstart.yaml --out $(DEMO_REPORT) $(DEMO_FLAGS)
	@echo "report: $(DEMO_REPORT)/README.md (and index.html); browse the runs with: $(BIN)/studybench ui"

## reports: rebuild the committed reports/<study>/ folders: the quickstart as in `make demo` and the
## equal-budget example (fair_tuning) in full, the paper studies at smoke scale (--profile smoke).
## Runs already FINISHED in results/ are reused.
FULL_STUDIES := quickstart fair_tuning
SMOKE_STUDIES := zhao2019_rmi_ablation guo2018_lad zhang2021_sr goncalves2022_mi_study
reports: install
	set -e; for s in $(FULL_STUDIES); do \
		$(BIN)/studybench run studies/$$s.yaml; \
		$(BIN)/studybench report studies/$$s.yaml --out reports/$$s; \
	done
	set -e; for s in $(SMOKE_STUDIES); do \
		$(BIN)/studybench run studies/$$s.yaml --profile smoke; \
		$(BIN)/studybench report studies/$$s.yaml --profile smoke --out reports/$$s; \
	done

## test: the whole test suite (what CI runs; ~8 minutes on 2 cores)
test: install
	$(BIN)/python -m pytest -q

## test-fast: the unit and contract tests only (tests/conftest.py FAST_FILES; about a minute on 2 cores)
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check studybench tests benchmarks
	$(BIN)/ruff format --check studybench tests benchmarks
