# Local checks: `make all` runs what CI runs (.ci/run), in the same order.
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := jmlsync tests benchmarks

.PHONY: all venv lint format-check format typecheck imports test

all: lint format-check typecheck imports test

$(BIN)/pytest:
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'

venv: $(BIN)/pytest

lint: venv
	$(BIN)/ruff check $(SOURCES)

format-check: venv
	$(BIN)/ruff format --check $(SOURCES)

format: venv
	$(BIN)/ruff format $(SOURCES)

typecheck: venv
	$(BIN)/mypy

imports: venv
	$(BIN)/lint-imports

# The README's test command.
test: venv
	bash scripts/install-test-deps.sh
	$(BIN)/pytest -q
