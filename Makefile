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
# vegeta generates the benchmark load; built once from its Go module.
VEGETA_VERSION := v12.13.0
VEGETA := .local/bin/vegeta
# `make bench BENCH_ARGS="--quick"` or `--scenario NAME`; `--list` describes them.
BENCH_ARGS ?=
# `make chaos CHAOS_ARGS="--quick"` or `--scenario NAME` (repeatable).
CHAOS_ARGS ?=
PROTOS := proto/aimtp/v1/dags.proto
PROTO_GEN := $(foreach f,dags_pb2.py dags_pb2.pyi dags_pb2_grpc.py dags_pb2_grpc.pyi,aimtp/v1/$(f))

.PHONY: help venv proto infra up down run test lint fmt docs kustomize vegeta bench chaos

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(UV) || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(UV) sync --frozen --inexact --quiet
	@touch $@

venv: $(VENV)/.synced $(PROTO_GEN) ## create .venv from the lock file, generate the gRPC code

# The gRPC code is generated from proto/ by the pinned grpcio-tools, never committed
# (aimtp/v1/ is git-ignored): .py modules plus .pyi stubs so mypy checks their users.
$(PROTO_GEN) &: $(PROTOS) $(VENV)/.synced
	$(PY) -m grpc_tools.protoc -I proto \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)
	@touch $(PROTO_GEN)

proto: $(PROTO_GEN) ## generate the gRPC code from proto/ (make venv does it too)

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

# The version is stamped into the binary (vegeta -version), so a bumped VEGETA_VERSION rebuilds.
vegeta: ## build the pinned vegeta load generator into .local/bin (once; needs Go)
	@[[ "$$($(VEGETA) -version 2>/dev/null | awk '/^Version:/ {print $$2}')" == "$(VEGETA_VERSION)" ]] || { \
	  command -v go >/dev/null || { echo "vegeta is built from source: install Go" >&2; exit 1; }; \
	  echo "building vegeta $(VEGETA_VERSION) into $(VEGETA)"; \
	  GOBIN=$(CURDIR)/.local/bin CGO_ENABLED=0 go install \
	    -ldflags "-X main.Version=$(VEGETA_VERSION)" github.com/tsenart/vegeta/v12@$(VEGETA_VERSION); }

bench: infra vegeta ## run the benchmarks (bench/README.md); BENCH_ARGS="--quick" for a smoke run
	$(PY) -m bench --vegeta $(VEGETA) $(BENCH_ARGS)

chaos: infra ## faults under load on two of every process: exits 1 if anything is lost (chaos/README.md)
	$(PY) -m chaos $(CHAOS_ARGS)
