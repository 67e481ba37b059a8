# Everything runs from .venv, created on first use; only python3 (3.11+) and make are needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test test-faults run demo lint clean schema

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow"

test-faults: $(STAMP)
	$(PY) -m pytest -m slow

run: $(STAMP)
	$(VENV)/bin/orchestrator serve

demo: $(STAMP)
	$(VENV)/bin/orchestrator demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check orchestrator tests
	$(VENV)/bin/ruff format --check orchestrator tests
	$(VENV)/bin/mypy

# migrations/schema.sql: the whole schema after every migration, for reading (after a new migration).
schema: $(STAMP)
	$(PY) -m tests.integration.schema_snapshot

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache

# Throughput and cost next to a lean baseline (docs/benchmarks.md); BENCH_ARGS="--quick" for a look.
.PHONY: bench
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)
