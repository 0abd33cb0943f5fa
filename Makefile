# The two commands: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
# The interpreter the virtualenv is made with: deploy/python.sh picks one (the
# distribution's optimised build first); `make PYTHON=/path/to/python3.11 ...` overrides.
PYTHON ?=
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test chaos bench unit lint venv services-up services-down clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || { python=$(or $(PYTHON),$$(bash deploy/python.sh)) && "$$python" -m venv $(VENV); }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## make run: broker, PostgreSQL, worker, projector, API and a demo stream; Ctrl-C stops all
run: $(STAMP)
	bash deploy/run.sh

## make test: unit, integration and e2e tests against a real Kafka and PostgreSQL
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

## make chaos: the crash tests with 100 SIGKILLs of a worker mid-stream, on the
## partition-ordered stream and on the four-topic one (referrals, redemptions, retries)
chaos: $(STAMP)
	LOYALTY_CHAOS_KILLS=100 $(VENV)/bin/python -m pytest -q -s -p no:cacheprovider \
		tests/e2e/test_crash_and_rebalance.py -k "killed or sigkill"

## make bench [EVENTS=1000000] [WORKERS=2]: throughput of ingest, the pipe baseline,
## projections, replay, as-of answers and analytics queries
EVENTS ?= 200000
WORKERS ?= 1
bench: $(STAMP)
	$(VENV)/bin/python -m tests.bench.bench --events $(EVENTS) --workers $(WORKERS)

unit: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check services projections tests
	$(VENV)/bin/mypy services projections

services-up: $(STAMP)
	bash deploy/local.sh up

services-down:
	bash deploy/local.sh down

clean:
	bash deploy/local.sh down || true
	bash deploy/postgres/pg.sh destroy || true
	rm -rf .local $(VENV)
