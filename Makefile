# API Hub: every habit is one command, the same locally and in CI.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
COV_FLOOR ?= 90

.PHONY: help setup up up-monitoring down status run test test-unit test-integration lint typecheck schemas bench clean

help:
	@echo "make run     set up everything, start the local stack, send the demo workload, print a summary"
	@echo "make test    set up everything, run the unit tests (coverage floor $(COV_FLOOR) %), then the integration"
	@echo "             tests (starts Kafka and Redis); make test-unit runs the first part alone"
	@echo "make up | down | status   manage the local stack (Kafka, Redis, sandbox, gateway, workers) under .local/"
	@echo "make up-monitoring        make up plus Prometheus on 127.0.0.1:19090 (alerts), see docs/MONITORING.md"
	@echo "make lint | typecheck | schemas"
	@echo "make bench   eleven benchmarks x 3 runs against the sandbox referee (~40 min, starts Kafka and Redis);"
	@echo "             docs/BENCHMARKS.md only from a clean tree, else .local/bench/BENCHMARKS.md"
	@echo "make chaos   the fault suite (tests/chaos, ~20 min, starts Kafka and Redis): gateway, workers,"
	@echo "             Redis, Sentinel, upstream faults and fuzz under load; figures in docs/RELIABILITY.md"
	@echo "make soak    the production profile for SOAK_MINUTES (10) on a stack of its own, sampled and judged;"
	@echo "             docs/soak/ only from a clean tree, else .local/soak/<run>/"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

up: setup
	bash ops/stack.sh up kafka redis
	set -a && source .local/stack.env && set +a && $(BIN)/apihub topics ensure
	bash ops/stack.sh up sandbox gateway history verification recovery

# Prometheus (Debian's package, installed when missing) scraping the stack, with the alert rules.
up-monitoring: up
	bash ops/stack.sh up prometheus

down:
	bash ops/stack.sh down

status:
	bash ops/stack.sh status

run: up
	@echo
	set -a && source .local/stack.env && set +a && $(BIN)/apihub demo
	@echo
	@echo "Audit log (requests and responses with their headers), read with Kafka's own console consumer:"
	@set -a && source .local/stack.env && set +a && \
		echo "  ops/bin/kafka-console-consumer --bootstrap-server $$KAFKA_BOOTSTRAP_SERVERS --topic api.responses \\" && \
		echo "      --from-beginning --property print.headers=true --property print.key=true --timeout-ms 5000" && \
		echo "Metrics: $$GATEWAY_METRICS_URL/metrics   Logs: .local/*/   Stop everything: make down"

# make test = the unit suite with its coverage floor (test-unit), then the integration suite (chaos left
# out, as in test-integration) with its coverage appended, printing the whole-suite figure; each test runs once.
test: test-unit
	$(BIN)/pytest -p no:cacheprovider -m "integration and not chaos" --cov --cov-append \
		--cov-report=term:skip-covered

# The fast suite alone (no Kafka, Redis or sandbox process) must cover COV_FLOOR % of libs/hubclient and
# services (branches included, the figure of [tool.coverage] in pyproject.toml).
test-unit: setup
	$(BIN)/pytest -p no:cacheprovider -m "not integration" --cov --cov-report=term:skip-covered \
		--cov-fail-under=$(COV_FLOOR)

test-integration: setup
	$(BIN)/pytest -p no:cacheprovider -m "integration and not chaos"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check libs services tests

typecheck: setup
	$(BIN)/mypy libs/hubclient services tests

schemas: setup
	$(BIN)/apihub schemas generate

# Runs all eleven three times (pacing pacing-jitter pacing-cpu pacing-kill failover priority overhead throughput
# tokens pool scale); `$(BIN)/python -m tests.bench pacing priority --quick` runs a subset once as a short smoke run.
bench: setup
	$(BIN)/python -m tests.bench

# The production profile (gateway as gateway-worker-real, three workers, the feed, reads at 80 % of the limits)
# for SOAK_MINUTES on its own Kafka, Redis and sandbox on free loopback ports (the shared stack is left alone),
# sampled every 5 s: memory, lag, errors, pacing. Writes docs/soak/SOAK.md and soak.png only from a clean tree
# (otherwise .local/soak/<run>/). Its one-minute smoke run, outside make test (about two minutes):
# `$(BIN)/pytest -p no:cacheprovider tests/soak/smoke_soak.py`.
SOAK_MINUTES ?= 10
.PHONY: soak
soak: setup
	$(BIN)/python -m tests.soak --minutes $(SOAK_MINUTES)

# The fault suite: every scenario under tests/chaos (marker chaos; make test leaves them out) against the
# local stack on the ports in the environment, each recording its figures in .local/chaos/results/, then
# the report rewrites the figures section of docs/RELIABILITY.md (also when a scenario failed).
.PHONY: chaos
chaos: setup
	rm -rf .local/chaos/results
	$(BIN)/pytest -p no:cacheprovider -rxX -m chaos tests/chaos; status=$$?; \
	$(BIN)/python -m tests.chaos.report; exit $$status

clean: down
	rm -rf .local
