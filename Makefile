# Every target bootstraps .venv on first use; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help run test lint lint-deploy bench chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) ## start the whole cluster on an embedded nats-server and train (Ctrl-C stops it)
	$(BIN)/ringmaster up

test: $(STAMP) lint ## lint, then every test against a real nats-server
	$(BIN)/pytest -q -p no:cacheprovider -rs --durations=15

lint: $(STAMP) lint-deploy ## ruff, mypy --strict and the deploy files
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

K8S := $(filter-out deploy/k8s/kustomization.yaml deploy/k8s/nats-values.yaml,$(wildcard deploy/k8s/*.yaml))

lint-deploy: $(STAMP) ## Dockerfile, compose and Kubernetes files against their schemas (no Docker)
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	$(BIN)/kubernetes-validate --strict --quiet $(K8S)
	for f in deploy/*.sh; do sh -n "$$f" || exit 1; done
	@! grep -nE '_CAPABILITIES:.*"shell"' deploy/compose.yaml $(K8S) || \
		{ echo 'lint-deploy: `shell` (any command) is a default capability above'; exit 1; }

bench: $(STAMP) ## run the benchmarks and rewrite bench/RESULTS.md
	$(BIN)/python -m bench

chaos: $(STAMP) ## training under kill -9s and a NATS restart, then bad input (CHAOS_ARGS="--seed S --aimed")
	$(BIN)/python -m chaos $(CHAOS_ARGS)

clean: ## remove the virtual environment and local cluster data
	rm -rf $(VENV) .ringmaster
