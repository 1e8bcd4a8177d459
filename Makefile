# Every target installs what it needs into $(VENV) first; nothing is assumed installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/online_retail.parquet
MODELS_DIR ?= $(or $(RECO_MODELS_DIR),models)
HOST ?= 127.0.0.1
PORT ?= 8000
TRAIN_ARGS ?=
SERVE_ARGS ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
ENGINE ?= local
SPARK_MASTER ?=

# A SQLite file or a postgresql:// URL (docs/operations.md, "Several servers, one PostgreSQL").
ACTIVITY_DB ?= $(or $(RECO_ACTIVITY_DB),var/activity.sqlite3)
ALERTS ?= exports/alerts.csv
ALERTS_ARGS ?=
SERVER_URL ?= http://$(HOST):$(PORT)
EXPORT ?= exports/recommendations.csv
K ?= 10

.PHONY: run install install-spark install-browser install-postgres lint typecheck train evaluate nightly export alerts serve serve-dev test bench bench-serve install-bench bench-store bench-spark bench-simulate bench-tracing clean

## Train on the shipped log, then serve it on $(HOST):$(PORT).
run: train serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## The optional Spark engine (pyspark; Spark itself needs Java 17).
$(VENV)/.installed-spark: setup.cfg pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,spark]'
	touch $@

install-spark: $(VENV)/.installed-spark

## ENGINE=spark trains on Spark (SPARK_MASTER=spark://host:7077, yarn, k8s://...; default local[*]).
train: install $(if $(filter spark,$(ENGINE)),install-spark)
	$(BIN)/python train.py --data '$(DATA)' --models-dir '$(MODELS_DIR)' --activity-db '$(ACTIVITY_DB)' \
		--engine '$(ENGINE)' $(if $(SPARK_MASTER),--spark-master '$(SPARK_MASTER)') $(TRAIN_ARGS)

## Back-in-stock, price-drop and new-for-you alerts: to $(ALERTS) (.csv or .jsonl) and, with
## smtp_host configured ([alerts] in RECO_CONFIG, or ALERTS_ARGS="--smtp-host ..."), by e-mail.
alerts: install
	mkdir -p "$$(dirname '$(ALERTS)')"
	$(BIN)/python -m recommender alerts --models-dir '$(MODELS_DIR)' --activity-db '$(ACTIVITY_DB)' \
		--out '$(ALERTS)' $(ALERTS_ARGS)

## Train and evaluate without promoting: the report is in the new version's report.html.
evaluate: install
	$(BIN)/python train.py --data '$(DATA)' --models-dir '$(MODELS_DIR)' --activity-db '$(ACTIVITY_DB)' --evaluate --no-promote $(TRAIN_ARGS)

## What cron runs: new purchases in, evaluate, gate, promote, server reload, prune.
nightly: install
	$(BIN)/python -m recommender nightly --data '$(DATA)' --models-dir '$(MODELS_DIR)' \
		--include-activity '$(ACTIVITY_DB)' --server-url '$(SERVER_URL)' $(TRAIN_ARGS)

## Each customer's top K for an e-mail campaign (CSV; EXPORT=file.jsonl for JSON Lines).
export: install
	mkdir -p "$$(dirname '$(EXPORT)')"
	$(BIN)/python -m recommender export --models-dir '$(MODELS_DIR)' --activity-db '$(ACTIVITY_DB)' \
		--out '$(EXPORT)' --k '$(K)' --format $(if $(filter %.jsonl,$(EXPORT)),jsonl,csv)

serve: install
	$(BIN)/python serve.py --host '$(HOST)' --port '$(PORT)' --models-dir '$(MODELS_DIR)' \
		--activity-db '$(ACTIVITY_DB)' $(SERVE_ARGS)

serve-dev: install
	$(BIN)/python serve.py --dev --host '$(HOST)' --port '$(PORT)' --models-dir '$(MODELS_DIR)' \
		--activity-db '$(ACTIVITY_DB)' $(SERVE_ARGS)

## Debian's Chromium for the browser tests (they are skipped, with the reason, where it is missing).
install-browser:
	@command -v chromium >/dev/null || (command -v apt-get >/dev/null && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "chromium could not be installed: the browser tests will be skipped"

## Debian's PostgreSQL for the shared-store tests (they start a throwaway cluster on 127.0.0.1 themselves).
install-postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || (command -v apt-get >/dev/null && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
		|| echo "postgresql could not be installed: the PostgreSQL store tests will be skipped"

## ruff (format and lint, pyproject.toml) and import-linter's contracts (setup.cfg).
lint: install
	$(BIN)/ruff format --check --quiet recommender tests bench train.py serve.py
	$(BIN)/ruff check --quiet recommender tests bench train.py serve.py
	$(BIN)/lint-imports --no-cache >/dev/null || $(BIN)/lint-imports --no-cache

## mypy on the package (setup.cfg).
typecheck: install
	$(BIN)/mypy recommender

## CI=true: a test that would be skipped for want of Java, Chromium or PostgreSQL fails instead.
## TEST_WORKERS processes (pytest-xdist) share the test files, the longest first (conftest.py).
test: install install-spark install-browser install-postgres lint typecheck
	CI=true $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## Benchmarks (not CI): training at 1M/5M/20M lines against implicit alone, serving with wrk,
## model load time and memory per worker. Results in bench/results/. SIZES=1M,5M for a short run.
install-bench:
	command -v wrk >/dev/null && command -v hey >/dev/null && test -x /usr/bin/time \
		|| (apt-get update && apt-get install -y wrk hey time)

bench: install install-bench
	PYTHON=$(BIN)/python bash bench/run_all.sh

## Serving only, shorter (about 15 minutes): every endpoint against /health at saturation, and p50/p99
## at 500, 1,000 and 2,000 req/s offered at a constant rate (bench/constant_rate.py; at 1,000 also
## under hey -c10 -q100, which sends bursts of 10), on the shipped model and the 50,000-item one;
## bench/results/serving.md.
bench-serve: install install-bench
	$(BIN)/python bench/serve_bench.py --models shipped,synthetic --repeat 2 --duration 5 --skip-memory --rates 500,1000,2000

## The activity store on PostgreSQL against SQLite (same run): the driver's hot path, and every
## personal endpoint and POST /v1/events at saturation and at 1,000 req/s; bench/results/store.md.
bench-store: install install-bench install-postgres
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/store_bench.py --models shipped,synthetic

## The 20M-line synthetic log through both engines (Spark in local mode): time and peak memory.
bench-spark: install install-spark install-bench
	$(BIN)/python bench/spark_scale.py $(if $(SIZES),--sizes $(SIZES))

## Experiment results against simulated shoppers (customers of the shipped log, real server):
## an A/B the model must win with the true sign, and at most 2 of 20 A/A runs significant
## (a few minutes); bench/results/simulate_shop.md.
bench-simulate: install
	$(BIN)/python bench/simulate_shop.py

## What tracing costs: every endpoint with tracing on against off (same model, same run), and
## the memory an experiment's second model version adds (about 6 minutes);
## bench/results/tracing_cost.md.
bench-tracing: install install-bench
	$(BIN)/python bench/tracing_cost.py --repeat 3 --duration 5

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
