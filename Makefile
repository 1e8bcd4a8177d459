# Every target installs what it needs into $(VENV) first; nothing is assumed installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/online_retail.parquet
MODELS_DIR ?= models
HOST ?= 127.0.0.1
PORT ?= 8000
TRAIN_ARGS ?=
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run install train serve serve-dev test clean

## Train on the shipped log, then serve it on $(HOST):$(PORT).
run: train serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

train: install
	$(BIN)/python train.py --data '$(DATA)' --models-dir '$(MODELS_DIR)' $(TRAIN_ARGS)

serve: install
	$(BIN)/python serve.py --host '$(HOST)' --port '$(PORT)' --models-dir '$(MODELS_DIR)' $(SERVE_ARGS)

serve-dev: install
	$(BIN)/python serve.py --dev --host '$(HOST)' --port '$(PORT)' --models-dir '$(MODELS_DIR)' $(SERVE_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
