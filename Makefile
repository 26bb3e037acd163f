# Two commands: `make run` and `make test`. Everything else is optional.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# The suite runs in this many processes, one test file each at a time (pytest-xdist).
TEST_WORKERS ?= 2

.PHONY: run test test-fast lint format bench fuzz chaos soak clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,tracing,webrtc]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[local,tracing,webrtc,dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/python -m server --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	bash scripts/ensure-test-deps.sh $(BIN)/python
	$(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -ra -m "not slow" -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Real-time voice sweep (server pinned to CPU 0, load generator to CPU 1; < 15 min),
# written to docs/benchmarks.md. Run it on an otherwise idle machine.
bench: $(VENV)/.installed-dev
	bash loadtest/bench.sh

# The long fuzz runs (>= 10 000 HTTP cases against /openapi.json, 2000 WebSocket walks;
# about 15 min), their figures written to docs/reliability.md. Quick ones are in `make test`.
fuzz: $(VENV)/.installed-dev
	$(BIN)/python -m loadtest.fuzz

# Faults that are not polite (SIGKILLed workers and databases, Redis restarts, a full
# journal, slow providers and clients), each bounded to about two minutes, on loopback with
# a private Redis and PostgreSQL; figures to docs/reliability.md. SCENARIOS= picks some.
chaos: $(VENV)/.installed-dev
	$(BIN)/python -m loadtest.chaos $(SCENARIOS)

# CALLERS real-time voice sessions for DURATION seconds, resources sampled every 10 s;
# growth after warm-up under 5 %; plot and figures to docs/reliability.md. Not in `test`.
CALLERS ?= 200
DURATION ?= 1800
soak: $(VENV)/.installed-dev
	$(BIN)/python -m loadtest.soak --callers $(CALLERS) --duration $(DURATION)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
