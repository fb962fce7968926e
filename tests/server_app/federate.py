"""Helpers for in-process federations in tests: the real ServerApp loop and ClientApp."""

import json

from client_app.app import app as client_app
from server_app.config import DEFAULTS, load_config
from server_app.local_grid import InProcessGrid
from server_app.runner import run_experiment

FAST = {
    "dataset": "digits",
    "num-partitions": 3,
    "num-server-rounds": 2,
    "local-steps": 15,
    "distill-steps": 30,
    "alpha": 1.0,
}


def run(tmp_path, overrides=None, hook=None, node_configs=None):
    cfg = load_config({**DEFAULTS, **FAST, "output-dir": str(tmp_path), **(overrides or {})})
    n = cfg.num_partitions
    nodes = node_configs or [{"partition-id": i, "num-partitions": n} for i in range(n)]
    return run_experiment(InProcessGrid(client_app, nodes, reply_hook=hook), cfg)


def rows(summary):
    with open(summary["paths"]["metrics"]) as f:
        return [json.loads(line) for line in f]
