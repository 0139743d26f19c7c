# AIMTP developer commands. A newcomer needs two: `make run` and `make test`.
SHELL := bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
LOCAL := infra/local

.PHONY: help venv infra up down run test lint fmt docs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(UV) || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(UV) sync --frozen --inexact --quiet
	@touch $@

venv: $(VENV)/.synced ## create .venv from the lock file

infra: venv ## start MariaDB and Kafka (installed on first use)
	@bash $(LOCAL)/mariadb.sh up
	@bash $(LOCAL)/kafka.sh up

up: infra ## start the whole stack in the background and wait until healthy
	@bash $(LOCAL)/stack.sh up

down: ## stop everything `make up` or `make run` started
	@bash $(LOCAL)/stack.sh down
	@bash $(LOCAL)/kafka.sh down
	@bash $(LOCAL)/mariadb.sh down

run: infra ## run the whole stack in the foreground; Ctrl-C stops it
	@bash $(LOCAL)/stack.sh run

test: lint infra ## lint, then the full suite against real MariaDB and Kafka
	$(PY) -m pytest

lint: venv ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: venv ## regenerate the configuration table in README.md
	$(PY) infra/local/readme_settings.py
