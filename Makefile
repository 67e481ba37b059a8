# Everything runs from .venv, created on first use; only python3 (3.11+) and make are needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test test-faults test-api run demo demo-soak lint clean schema

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

# schemathesis (every check, every phase) against the service started by tests/api/run.py,
# with a token, twice: from the checkout and from the wheel installed in a fresh venv;
# schemathesis.toml says how much; under four minutes in all.
test-api: $(STAMP)
	$(PY) -m tests.api.run

run: $(STAMP)
	$(VENV)/bin/orchestrator serve

demo: $(STAMP)
	$(VENV)/bin/orchestrator demo $(DEMO_ARGS)

# The demo's self-check, RUNS times in a row with a new fault seed each time; stops at the
# first disagreement and shows it (issue 10: a transient failure must never end a cancel).
RUNS ?= 100
demo-soak: $(STAMP)
	@for i in $$(seq 1 $(RUNS)); do \
	  if ! $(VENV)/bin/orchestrator demo --seed $$i --port $$((20000 + i)) $(DEMO_ARGS) \
	      > .demo-soak.log 2>&1; then \
	    echo "demo run $$i of $(RUNS) (seed $$i) failed its self-check:"; \
	    tail -30 .demo-soak.log; exit 1; \
	  fi; \
	done; echo "demo self-check passed $(RUNS) of $(RUNS) runs in a row"

lint: $(STAMP)
	$(VENV)/bin/ruff check orchestrator tests
	$(VENV)/bin/ruff format --check orchestrator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# migrations/schema.sql: the whole schema after every migration, for reading (after a new migration).
schema: $(STAMP)
	$(PY) -m tests.integration.schema_snapshot

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache

# Throughput and cost next to a lean baseline and issue 18's naive service (docs/benchmarks.md),
# and the claim, sweep, retention and stats rounds at 1M and 10M rows (the 10M table takes
# about 5 minutes and 5 GB of disk to build; BENCH_ARGS="--scale-rows 1000000" leaves it out).
# About 30 minutes in all; BENCH_ARGS="--quick" for a look (a tenth of every size).
.PHONY: bench
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)
