"""The FMD table's bookkeeping: what a run plans, how gains are reported, run names."""

from __future__ import annotations

import pytest

from benchmarks import fmd


def _row(partition: str, method: str, seed: int, acc: float) -> dict:
    return {
        "partition": partition,
        "method": method,
        "seed": seed,
        "final-accuracy": acc,
        "last3-accuracy": acc,
        "worst-class-accuracy": 0.0,
        "teacher-accuracy": 0.7 if method.startswith("FMD") else None,
    }


def test_gains_are_per_seed_differences_against_fedavg():
    results = [
        _row("dirichlet a=0.01", "FedAvg", 0, 0.50),
        _row("dirichlet a=0.01", "FMD", 0, 0.60),
        _row("dirichlet a=0.01", "FedAvg", 1, 0.60),
        _row("dirichlet a=0.01", "FMD", 1, 0.55),
        _row("dirichlet a=0.01", "FMD", 2, 0.90),  # no FedAvg for seed 2: not a gain
    ]
    gains = fmd.seed_gains(results, "dirichlet a=0.01", "FMD", "final-accuracy")
    assert gains == pytest.approx({0: 10.0, 1: -5.0})
    line = fmd.table(results, {"accuracy": 0.82})[2]
    assert "+2.5 (+10.0, -5.0)" in line  # the mean, then every seed
    assert line.startswith("| dirichlet a=0.01 | 3 |")


def test_a_resumed_plan_names_every_missing_triple_and_rejects_unknown_rows():
    args = fmd.parser().parse_args(
        ["--seeds", "0", "--partitions", "dirichlet a=0.5,1 class/client", "--methods", "FMD"]
    )
    assert fmd.plan(args) == [
        ("dirichlet a=0.5", "FMD", 0),
        *[("1 class/client", "FMD", s) for s in (0, 1, 2)],  # a headline cell: 3 seeds
    ]
    with pytest.raises(SystemExit, match="unknown"):
        fmd.plan(fmd.parser().parse_args(["--methods", "FMD,FedGen"]))


def test_run_names_are_path_safe_and_keep_the_old_names():
    assert fmd.run_name("fmd", "1 class/client", "FMD", 0) == "fmd-bench-FMD-1classclient-s0"
    weighted = fmd.run_name("fmd", "dirichlet a=0.1", "FMD (weighted)", 2)
    assert weighted == "fmd-bench-FMD-weighted-dirichleta=0.1-s2"
