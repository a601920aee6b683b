# The commands a person types. Each installs what it needs first (scripts/setup.sh).
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test soak check lint unit bench rpm clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m tests.lab.demo

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The checks that need no root: what to run before every commit.
check: lint unit

lint: setup
	$(VENV)/bin/ruff check networkd tests bench
	$(VENV)/bin/ruff format --check networkd tests bench
	$(VENV)/bin/mypy

# The long fault-injection tests (trial counts of the issues, several minutes); CI runs them.
soak: setup
	$(PY) -m pytest -m soak $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

rpm: setup
	bash packaging/rpm/build.sh

clean:
	rm -rf build dist rpmbuild *.egg-info
