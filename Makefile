# The two commands of the README. Both set everything up first (idempotent).
.PHONY: run test lint setup
SHELL := /bin/bash

setup:
	bash scripts/bootstrap.sh

# Default federated job: Fashion-MNIST, 10 clients, Dirichlet alpha=0.5, FedAvg, small CNN.
run: setup
	. scripts/flwr_env.sh && .venv/bin/python scripts/simulate.py --num-supernodes 10 \
		--run-config "$(RUN_CONFIG)"

test: setup
	. scripts/flwr_env.sh && .venv/bin/python -m pytest -q --durations=30 $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/mypy .
