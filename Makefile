# VCCI developer and operator entry points. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

# PostgreSQL and Redis on this machine by default; set either to empty for the embedded
# default (SQLite + local-memory cache), e.g. `make run DATABASE_URL= REDIS_URL=`.
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/vcci
REDIS_URL ?= redis://127.0.0.1:6379/0
export DATABASE_URL REDIS_URL
# Tests flush their cache: keep them off the Redis database a running server uses.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

DEMO_ORG ?= demo
DEMO_USER ?= analyst
DEMO_ACTIVITIES ?= 20000
BIND ?= 0.0.0.0:8000

.PHONY: help install env services createdb migrate factors seed run serve test lint typecheck check ci clean bench-db bench-cache

help:
	@echo "make run    - install, migrate, import factors, seed a demo org, serve on :8000 (gunicorn + gevent)"
	@echo "make test   - the whole test suite (needs PostgreSQL and Redis)"
	@echo "make lint   - ruff;  make typecheck - mypy;  make check - Django system and migration checks"
	@echo "make bench-cache - emissions summary and list page uncached / Redis / memory / 304 (docs/benchmarks/cache.md)"

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

# A per-checkout secret key, generated once and kept out of git.
.env:
	@umask 077; echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env

env: install .env

# Fails with a clear message when PostgreSQL or Redis does not answer (CI runs this first).
services: install
	$(PY) -m vcci.createdb --check-redis

createdb: install
	@if [[ "$$DATABASE_URL" == postgres* ]]; then $(PY) -m vcci.createdb; fi

migrate: env createdb
	$(PY) manage.py migrate --no-input

factors: migrate
	$(PY) manage.py import_factors

seed: factors
	$(PY) manage.py seed_demo --org $(DEMO_ORG) --activities $(DEMO_ACTIVITIES) --if-empty
	$(PY) manage.py create_org_user --org $(DEMO_ORG) --username $(DEMO_USER) --admin-login

serve: migrate
	$(PY) manage.py collectstatic --no-input -v0
	GUNICORN_BIND=$(BIND) $(BIN)/gunicorn -c vcci/gunicorn.conf.py vcci.wsgi

run: seed serve

test: env
	REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy .

check: env createdb
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

ci: lint typecheck check test

# The database benchmark, in one command: seeds organization $(BENCH_ORG) and a neighbour tenant of the
# same size ($(BENCH_ACTIVITIES) activities each, as production tables hold many tenants: org-scoped plans
# must skip the others' rows) if they have none (COPY, then VACUUM (ANALYZE); minutes), checks every
# index and hot-query plan on that data (docs/benchmarks/check_indexes.txt; fails on a missed index),
# then runs naive vs optimized (docs/benchmarks/db.md). Its writes are rolled back: the data is unchanged.
BENCH_ORG ?= bench
BENCH_ACTIVITIES ?= 1000000
BENCH_RUNS ?= 5
bench-db: factors
	$(PY) manage.py seed_demo --org $(BENCH_ORG) --activities $(BENCH_ACTIVITIES) --if-empty
	$(PY) manage.py seed_demo --org $(BENCH_ORG)-neighbour --activities $(BENCH_ACTIVITIES) --seed 43 --if-empty
	set -o pipefail; $(PY) manage.py check_indexes --org $(BENCH_ORG) | tee docs/benchmarks/check_indexes.txt
	$(PY) manage.py bench_db --org $(BENCH_ORG) --runs $(BENCH_RUNS) --out docs/benchmarks/db.md

# The cache benchmark: the emissions summary and list page through the whole stack (in-process client, token
# auth), uncached, from Redis (L2), from process memory (L1) and as 304s (docs/benchmarks/cache.md). Seeds
# organization $(BENCH_ORG) ($(BENCH_ACTIVITIES) activities, as bench-db does) only if it has none.
bench-cache: factors
	$(PY) manage.py bench_cache --org $(BENCH_ORG) --activities $(BENCH_ACTIVITIES) --output docs/benchmarks/cache.md

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache
