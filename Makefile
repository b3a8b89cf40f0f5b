# depthpilot developer tasks (`make help`).
#
#   make test           venv + install (only when pyproject.toml changed) + local RabbitMQ + chromium + pytest
#   make run            whole pipeline in one process: in-memory bus, mongomock store
#   make bench          every bench/*.py
#   make definitions    regenerate rabbitmq/definitions.json from depthpilot.topology
#   make sample-data    python -m depthpilot_cli sample-data
#   make compose-check  validate docker-compose.yml (needs no Docker daemon)
#   make up / down      docker compose up -d --build / down
#   make clean          caches and build output (distclean: the venv too)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV ?= .venv
PY := $(VENV)/bin/python
# Python used to create the venv: 3.11 if present, else python3 (pyproject allows 3.11 and 3.12).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
STAMP := $(VENV)/.depthpilot-installed
# Set TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) to install the CPU build of
# torch before the project: from PyPI, torch is a CUDA build of several GB.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
# 0 skips scripts/ensure_rabbitmq.sh (tests that need the broker will then fail or skip).
ENSURE_RABBITMQ ?= 1
# 0 skips scripts/ensure_chromium.sh (the HTML report test then skips, or fails under CI=true).
ENSURE_CHROMIUM ?= 1
COMPOSE ?= $(VENV)/bin/docker-compose
COMPOSE_ENV_FILE := $(if $(wildcard .env),.env,.env.example)

.PHONY: help install test run bench definitions sample-data compose-check up down clean distclean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

$(PY):
	@test -n "$(PYTHON)" || { echo "make: no python3.11 / python3 found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes (or the venv is new).
$(STAMP): pyproject.toml | $(PY)
ifneq ($(strip $(TORCH_INDEX_URL)),)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" --index-url "$(TORCH_INDEX_URL)"
endif
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

test: $(STAMP)
ifeq ($(ENSURE_RABBITMQ),1)
	scripts/ensure_rabbitmq.sh
endif
ifeq ($(ENSURE_CHROMIUM),1)
	scripts/ensure_chromium.sh
endif
	$(PY) -m pytest -q $(PYTEST_ARGS)

run: $(STAMP)
	AMQP_URL=memory:// MONGO_URL=mongomock:// $(PY) -m depthpilot_cli run-all

bench: $(STAMP)
	@shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no bench/*.py" >&2; exit 1; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PY) "$$f"; done

definitions: $(STAMP)
	$(PY) -m depthpilot_cli topology --write

sample-data: $(STAMP)
	$(PY) -m depthpilot_cli sample-data

compose-check: $(STAMP)
	@test -f .env || echo "no .env: checking docker-compose.yml with .env.example"
	$(COMPOSE) --env-file $(COMPOSE_ENV_FILE) -f docker-compose.yml config --quiet
	@echo "docker-compose.yml: OK"

up: $(STAMP)
	@test -f .env || { echo "create .env first: cp .env.example .env, then set real passwords" >&2; exit 1; }
	$(COMPOSE) -f docker-compose.yml up -d --build

down: $(STAMP)
	$(COMPOSE) -f docker-compose.yml down

clean:
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
	rm -rf .pytest_cache build dist *.egg-info $(STAMP)

distclean: clean
	rm -rf $(VENV)
