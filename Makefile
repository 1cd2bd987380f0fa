# Everything a fresh machine with Python 3.11+ and Java 17+ needs: `make run`, `make test`.
# Each step is idempotent and cached: the venv is rebuilt only when pyproject.toml or
# constraints.txt change; Kafka's jars live in ~/.cache/postback-pipeline.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test lint format typecheck unit kafka tools bench clean help

help:
	@echo "make run    start Kafka and the pipeline on loopback (Ctrl-C stops everything)"
	@echo "make test   lint, type-check and run the whole suite against a real Kafka"
	@echo "make bench  run every benchmark (B1-B7) and tabulate them in docs/performance.md"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The benchmarks' extra (quixstreams, for B7) on top: only `make bench` needs it.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $(BENCH_STAMP)

kafka: $(STAMP)
	$(BIN)/python -m devstack.kafka provision

BROKERS ?= 1
run: $(STAMP) kafka
	$(BIN)/postback-pipeline dev run --brokers $(BROKERS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

# helm (built once with Go into ~/.cache/postback-pipeline/bin) and promtool/prometheus
# (Debian's prometheus package) for the deployment checks in tests/deploy.
tools:
	bash tools/install-helm.sh >/dev/null
	bash tools/install-promtool.sh >/dev/null

test: lint typecheck kafka tools
	$(BIN)/pytest

bench: $(BENCH_STAMP) kafka
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
