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
# The benchmark and load-test tooling (the bench app) runs with the production settings plus the bench app; the
# servers it starts run the production settings (vcci.settings).
BENCH_SETTINGS := DJANGO_SETTINGS_MODULE=vcci.settings_dev

DEMO_ORG ?= demo
DEMO_USER ?= analyst
DEMO_ACTIVITIES ?= 20000
BIND ?= 0.0.0.0:8000

.PHONY: help install install-dev install-bench env services createdb migrate factors seed run serve worker test lint typecheck check rules ci clean bench-db bench-cache loadtest bench wrk promtool chromium capacity reliability

help:
	@echo "make run    - install, migrate, import factors, seed a demo org, serve on :8000 (gunicorn + gevent)"
	@echo "make worker - a Celery worker for the jobs (make run starts one beside gunicorn)"
	@echo "make test   - the whole test suite (needs PostgreSQL and Redis)"
	@echo "make lint   - ruff and lint-imports;  make typecheck - mypy;  make check - Django system and migration checks"
	@echo "make rules  - promtool check and unit tests of the alert rules (ops/prometheus; docs/operations.md)"
	@echo "make bench-cache - emissions summary and list page uncached / Redis / memory / 304 (docs/benchmarks/cache.md)"
	@echo "make loadtest - seed, gunicorn on :8765, locust headless (LOAD_USERS, LOAD_DURATION, ...), reports in loadtest-results/"
	@echo "make bench - bench_db, bench_cache, /healthz ceiling vs cached GETs (wrk), worker classes, load test -> docs/performance.md"
	@echo "make capacity - /healthz ceiling, 50-500 users with think times and without (overload) -> docs/capacity.md"
	@echo "make reliability - Redis, PostgreSQL and worker faults, retried writes and abuse under load -> docs/reliability.md"
	@echo "make bench-jobs - recalculation and import jobs at 1,000,000 rows, workers killed -> docs/benchmarks/jobs.md"
	@echo "make bench-reports - summaries from the rollups vs summing the emissions, 100k and 1M rows -> docs/benchmarks/reports.md"

# Three package sets, each installed once (a stamp per set, redone when its files change): the runtime
# (requirements.txt: make run), the bench tooling (requirements-bench.txt: the bench targets) and development
# (requirements-dev.txt: tests and static checks, with the bench set, which the suite tests too). A larger set
# includes the smaller ones, so it stamps them as well.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: requirements.txt | $(PY)
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-bench: requirements-bench.txt requirements.txt | $(PY)
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $(VENV)/.installed-runtime $@

$(VENV)/.installed-dev: requirements-dev.txt requirements-bench.txt requirements.txt | $(PY)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed-runtime $(VENV)/.installed-bench $@

install: $(VENV)/.installed-runtime
install-bench: $(VENV)/.installed-bench
install-dev: $(VENV)/.installed-dev

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

# collectstatic only when something it copies changed (the installed packages, the project's own static files, the
# settings): WhiteNoise compresses every file, most of a minute, and the manifest it writes is the stamp.
# The settings' default STATIC_ROOT; one set elsewhere is given to make as DATABASE_URL is (STATIC_ROOT=...).
STATIC_ROOT ?= $(CURDIR)/staticfiles
STATIC_MANIFEST := $(STATIC_ROOT)/staticfiles.json
STATIC_SOURCES := $(shell find calculator emissions perf vcci -path '*/static/*' -type f 2>/dev/null)
$(STATIC_MANIFEST): $(VENV)/.installed-runtime vcci/settings.py $(STATIC_SOURCES)
	@echo "Collecting static files (first run, or packages, settings or static files changed; about a minute)..."
	STATIC_ROOT=$(STATIC_ROOT) $(PY) manage.py collectstatic --no-input -v0
	@touch $@

# gunicorn, with a job worker beside it when there is a broker (Redis); without one, jobs run in the process that
# submits them. The worker stops with gunicorn.
serve: migrate $(STATIC_MANIFEST)
	@if [[ -n "$$REDIS_URL" ]]; then \
		$(WORKER_CMD) & worker=$$!; trap 'kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT; \
	fi; \
	GUNICORN_BIND=$(BIND) $(BIN)/gunicorn -c vcci/gunicorn.conf.py vcci.wsgi

# A Celery worker for the jobs (docs/jobs.md): prefork, one process per core by default, plain database connections.
WORKER_CONCURRENCY ?= 2
WORKER_CMD = DB_POOL=false $(BIN)/celery -A vcci worker --pool prefork --concurrency $(WORKER_CONCURRENCY) \
	--loglevel INFO --without-gossip --without-mingle
worker: migrate
	$(WORKER_CMD)

run: seed serve

test: install-dev env chromium
	REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest

# lint-imports: the import contracts of pyproject.toml ([tool.importlinter]), e.g. production code never imports bench.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install-dev
	$(BIN)/mypy .

check: env createdb
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

# The Prometheus alert rules of ops/prometheus: valid, and their unit tests pass (docs/operations.md).
rules: promtool
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/alerts_test.yml

ci: lint rules typecheck check test

# The database benchmark, in one command: seeds organization $(BENCH_ORG) and a neighbour tenant of the
# same size ($(BENCH_ACTIVITIES) activities each, as production tables hold many tenants: org-scoped plans
# must skip the others' rows) if they have none (COPY, then VACUUM (ANALYZE); minutes), checks every
# index and hot-query plan on that data (docs/benchmarks/check_indexes.txt; fails on a missed index),
# then runs naive vs optimized (docs/benchmarks/db.md). Its writes are rolled back: the data is unchanged.
BENCH_ORG ?= bench
BENCH_ACTIVITIES ?= 1000000
BENCH_RUNS ?= 5
bench-db: install-bench factors
	$(PY) manage.py seed_demo --org $(BENCH_ORG) --activities $(BENCH_ACTIVITIES) --if-empty
	$(PY) manage.py seed_demo --org $(BENCH_ORG)-neighbour --activities $(BENCH_ACTIVITIES) --seed 43 --if-empty
	set -o pipefail; $(PY) manage.py check_indexes --org $(BENCH_ORG) | tee docs/benchmarks/check_indexes.txt
	$(BENCH_SETTINGS) $(PY) manage.py bench_db --org $(BENCH_ORG) --runs $(BENCH_RUNS) --out docs/benchmarks/db.md

# The cache benchmark: the emissions summary and list page through the whole stack (in-process client, token
# auth), uncached, from Redis (L2), from process memory (L1) and as 304s (docs/benchmarks/cache.md). Seeds
# organization $(BENCH_ORG) ($(BENCH_ACTIVITIES) activities, as bench-db does) only if it has none.
bench-cache: install-bench factors
	$(BENCH_SETTINGS) $(PY) manage.py bench_cache --org $(BENCH_ORG) --activities $(BENCH_ACTIVITIES) --output docs/benchmarks/cache.md

# The load test, in one command (bench/loadtest.py): seeds $(LOAD_ORGS) organizations (loadtest-a, ...) with
# $(LOAD_ACTIVITIES) activities each if they have none, warms the cache, starts gunicorn on $(LOAD_BIND) (GUNICORN_*
# from the environment), runs locustfile.py headless, stops everything it started, writes report.html, the CSVs
# and summary.json to $(LOAD_OUT), and fails when a threshold is broken (error rate, cache hit rate read from
# /metrics, p95; 'off' skips one). Extra options: LOAD_ARGS, e.g. LOAD_ARGS=--no-require-metrics.
LOAD_USERS ?= 50
LOAD_SPAWN_RATE ?= 10
LOAD_DURATION ?= 60s
LOAD_WAIT_SCALE ?= 1
LOAD_OUT ?= loadtest-results
LOAD_ORGS ?= 2
LOAD_ACTIVITIES ?= 20000
LOAD_BIND ?= 127.0.0.1:8765
LOAD_MAX_ERROR_RATE ?= 0
LOAD_MIN_CACHE_HIT_RATE ?= 0.95
LOAD_MAX_P95_MS ?= off
LOAD_ARGS ?=
loadtest: install-bench factors
	$(BENCH_SETTINGS) $(PY) -m bench.loadtest --users $(LOAD_USERS) --spawn-rate $(LOAD_SPAWN_RATE) --duration $(LOAD_DURATION) \
		--wait-scale $(LOAD_WAIT_SCALE) --out $(LOAD_OUT) --orgs $(LOAD_ORGS) --activities $(LOAD_ACTIVITIES) \
		--bind $(LOAD_BIND) --max-error-rate $(LOAD_MAX_ERROR_RATE) --min-cache-hit-rate $(LOAD_MIN_CACHE_HIT_RATE) \
		--max-p95-ms $(LOAD_MAX_P95_MS) $(LOAD_ARGS)

# The performance report, in one command (bench/report.py): bench_db and bench_cache on organization 'bench' (seeded
# with 1,000,000 activities and a neighbour tenant if empty, as bench-db does), the throughput ceiling (wrk against
# /healthz, the bare view, and cached authenticated GETs and 304s at several concurrencies), the load test's mixed
# workload under gevent, sync and gthread workers, then docs/performance.md with PNG charts in docs/performance/ (raw
# outputs in loadtest-results/report/). Installs wrk with apt-get when missing. Extra options: BENCH_ARGS, e.g.
# BENCH_ARGS='--phases ceiling' (python -m bench.report --help).
BENCH_ARGS ?=
bench: install-bench factors wrk
	$(BENCH_SETTINGS) $(PY) -m bench.report --out docs/performance.md $(BENCH_ARGS)

# Installs wrk with apt-get when missing (make bench and make capacity measure the /healthz ceiling with it).
wrk:
	@command -v wrk >/dev/null || { \
		if command -v apt-get >/dev/null; then \
			SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
			$$SUDO apt-get install -y wrk || { $$SUDO apt-get update && $$SUDO apt-get install -y wrk; }; \
		else echo "wrk is needed (https://github.com/wg/wrk); install it with your package manager" >&2; exit 1; fi; }
	@command -v wrk >/dev/null || { echo "wrk is needed, and installing it failed" >&2; exit 1; }

# Installs Debian's Chromium and ChromeDriver with apt-get when missing: the browser tests (tests/browser) drive them.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		if command -v apt-get >/dev/null; then \
			SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
			$$SUDO apt-get install -y chromium chromium-driver \
				|| { $$SUDO apt-get update && $$SUDO apt-get install -y chromium chromium-driver; }; \
		else echo "Chromium and ChromeDriver are needed (the browser tests); install them with your package manager" >&2; exit 1; fi; }
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		|| { echo "chromium and chromedriver are needed, and installing them failed" >&2; exit 1; }

# Installs promtool (Debian's prometheus package) with apt-get when missing: make rules (and so make ci) needs it.
promtool:
	@command -v promtool >/dev/null || { \
		if command -v apt-get >/dev/null; then \
			SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
			$$SUDO apt-get install -y --no-install-recommends prometheus \
				|| { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends prometheus; }; \
		else echo "promtool is needed (https://prometheus.io/download/); install it with your package manager" >&2; exit 1; fi; }
	@command -v promtool >/dev/null || { echo "promtool is needed, and installing it failed" >&2; exit 1; }

# The capacity report, in one command (bench/capacity.py): the /healthz ceiling, then the load test at 50, 100, 200
# and 500 users with the locustfile's think times (the 500-user run for 10 minutes) and with none (overload), each
# point on two organizations of its own (20,000 activities each, seeded at the start of the point and left in the
# database), the uncached-page serialization benchmark on organization $(BENCH_ORG) (seeded as bench-db does, if
# empty), then docs/capacity.md with its bars, charts (docs/capacity/) and the before/after table (about 35 minutes;
# raw outputs in loadtest-results/capacity/). Extra options: CAPACITY_ARGS (python -m bench.capacity --help).
CAPACITY_ARGS ?=
capacity: install-bench factors wrk
	$(PY) manage.py seed_demo --org $(BENCH_ORG) --activities $(BENCH_ACTIVITIES) --if-empty
	$(BENCH_SETTINGS) $(PY) -m bench.capacity $(CAPACITY_ARGS)

# The reliability report, in one command (bench/reliability.py): its own PostgreSQL cluster and Redis server (started
# for the run on ports 55432 and 56379, removed after it: the machine's services are never touched), gunicorn with the
# production settings, and each fault injected under the locustfile's mixed load (make loadtest's 50 users): Redis
# killed for 15 s, PostgreSQL crashed and restarted under a write load, a worker killed, writes retried across a
# forced timeout, guessed tokens and passwords. Writes docs/reliability.md (about 6 minutes; raw outputs in
# loadtest-results/reliability/); exits non-zero when a goal is missed. Extra options: RELIABILITY_ARGS.
RELIABILITY_ARGS ?=
reliability: install-bench
	$(BENCH_SETTINGS) $(PY) -m bench.reliability $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) $(STATIC_ROOT) .pytest_cache .mypy_cache .ruff_cache

# What the audit trail costs the COPY write path (docs/audit.md): 100,000 activities + emissions written by COPY with
# the audit triggers off, with the installed statement-level triggers and with row-level ones, medians of 3, rolled
# back. Seeds organization $(AUDIT_BENCH_ORG) (20,000 activities, whose inputs the benchmark repeats) if it has none.
AUDIT_BENCH_ORG ?= audit-bench
.PHONY: bench-audit
bench-audit: install-bench factors
	$(PY) manage.py seed_demo --org $(AUDIT_BENCH_ORG) --activities 20000 --if-empty
	$(BENCH_SETTINGS) $(PY) manage.py bench_audit --org $(AUDIT_BENCH_ORG) --rows 100000 --runs 3

# The jobs benchmark (bench/jobs.py, docs/benchmarks/jobs.md): organization jobs-bench seeded with $(JOBS_ACTIVITIES)
# activities (COPY, timed), a new version of each factor dataset they use (every factor x 1.05), recalculation jobs on
# a Celery worker of 1 and then 2 processes, the activities imported as a CSV through POST /api/v1/imports/ (gunicorn
# and a worker) and with import_activities, and the recalculation and the API import again with the worker's pool
# processes SIGKILLed mid-chunk, compared with the undisturbed runs (exit 1 when they differ). Drops the earlier run's
# jobs-bench organizations first and deletes them and the x1.05 versions at the end (JOBS_ARGS=--keep keeps them);
# workers and jobs use their own queue, $(JOBS_QUEUE). Raw figures, the CSV and the logs: loadtest-results/jobs/.
JOBS_ACTIVITIES ?= 1000000
JOBS_QUEUE ?= vcci-bench-jobs
JOBS_ARGS ?=
.PHONY: bench-jobs
bench-jobs: install-bench factors
	$(BENCH_SETTINGS) CELERY_QUEUE=$(JOBS_QUEUE) $(PY) -m bench.jobs \
		--activities $(JOBS_ACTIVITIES) --out docs/benchmarks/jobs.md --results loadtest-results/jobs $(JOBS_ARGS)

# The reports benchmark (bench/reports.py, docs/benchmarks/reports.md): the emissions summaries uncached, read from
# the rollups and by summing the emissions, for organizations bench100k (100,000 activities) and $(BENCH_ORG)
# (1,000,000), each seeded with seed_demo if it has none; every rollup answer checked against the sum's. Reads only.
REPORTS_ROUNDS ?= 20
.PHONY: bench-reports
bench-reports: install-bench factors
	$(BENCH_SETTINGS) $(PY) manage.py bench_reports --small bench100k:100000 --large $(BENCH_ORG):1000000 \
		--rounds $(REPORTS_ROUNDS)
