# AIMTP developer commands. A newcomer needs two: `make run` and `make test`.
SHELL := bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
LOCAL := infra/local
# kustomize renders infra/k8s for the deployment tests; built once from its Go module.
KUSTOMIZE_VERSION := v5.8.1
KUSTOMIZE := .local/bin/kustomize

.PHONY: help venv infra up down run test lint fmt docs kustomize

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(UV) || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(UV) sync --frozen --inexact --quiet
	@touch $@

venv: $(VENV)/.synced ## create .venv from the lock file

infra: venv ## start MariaDB and Kafka (installed on first use), install Prometheus
	@bash $(LOCAL)/mariadb.sh up
	@bash $(LOCAL)/kafka.sh up
	@bash $(LOCAL)/prometheus.sh install

up: infra ## start the whole stack in the background and wait until healthy
	@bash $(LOCAL)/stack.sh up

down: ## stop everything `make up` or `make run` started
	@bash $(LOCAL)/stack.sh down
	@bash $(LOCAL)/kafka.sh down
	@bash $(LOCAL)/mariadb.sh down

run: infra ## run the whole stack in the foreground; Ctrl-C stops it
	@bash $(LOCAL)/stack.sh run

test: lint infra kustomize ## lint, then the full suite against real MariaDB and Kafka
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

# Checks the version rather than the file, so a bumped KUSTOMIZE_VERSION rebuilds.
kustomize: ## build the pinned kustomize into .local/bin (once, about a minute; needs Go)
	@[[ "$$($(KUSTOMIZE) version 2>/dev/null)" == "$(KUSTOMIZE_VERSION)" ]] || { \
	  command -v go >/dev/null || { echo "kustomize is built from source: install Go" >&2; exit 1; }; \
	  echo "building kustomize $(KUSTOMIZE_VERSION) into $(KUSTOMIZE)"; \
	  GOBIN=$(CURDIR)/.local/bin CGO_ENABLED=0 go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); }
