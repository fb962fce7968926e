"""The attacks benchmark's attackers really attack, at a tiny scale on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import attacks
from client_app.faults import poison_data
from federated_data import ArrayDataset


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    from benchmarks import harness

    monkeypatch.setattr(harness, "OUT", tmp_path)
    monkeypatch.setattr(attacks, "OUT", tmp_path)


TINY = ["--dataset", "digits", "--clients", "4", "--rounds", "2", "--local-steps", "5"]


def test_label_flip_reverses_every_label_and_only_for_that_fault():
    data = ArrayDataset(np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 3, 9, 5]))
    assert poison_data(data, "label-flip", 10).y.tolist() == [9, 6, 0, 4]
    assert poison_data(data, "nan", 10) is data
    with pytest.raises(ValueError, match="unknown"):
        poison_data(data, "toaster", 10)


def test_each_attack_applies_to_the_methods_it_can_hit():
    assert not attacks.applies("sign-flip-10", "FedH2L")
    assert not attacks.applies("noise-donation", "median")
    assert attacks.applies("label-flip", "FedH2L, agreement") and attacks.applies("inflate", "mean")


def test_the_plan_finishes_every_seed_of_a_cell_before_the_next_and_the_add_ons_last():
    order = attacks.plan([0, 1, 2])
    assert order[:3] == [("clean", "mean", 0), ("clean", "mean", 1), ("clean", "mean", 2)]
    later = [i for i, (_, column, _) in enumerate(order) if column in attacks.LATER]
    assert later == list(range(len(order) - len(later), len(order)))
    assert len(order) == len(set(order)) and all(attacks.applies(a, c) for a, c, _ in order)


def _metrics(run_name: str) -> list[dict]:
    path = attacks.OUT / "runs" / run_name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_inflation_is_dropped_and_adversarial_posteriors_weigh_nothing():
    args = attacks.parser().parse_args(TINY)
    row = attacks.run_cell("inflate", "mean", 0, args)
    assert row["status"] == "completed"
    assert all("exceeds the" in r["dropped"]["1000"] for r in _metrics("attacks-inflate-mean-s0"))

    row = attacks.run_cell("adversarial-posteriors", "FedH2L, agreement", 0, args)
    assert row["status"] == "completed" and 0 <= row["final-accuracy"] <= 1
    rounds = _metrics("attacks-adversarial-posteriors-fedh2l-agreement-s0")
    assert rounds[1]["train"]["min-peer-weight"] == 0.0  # the rewritten posteriors are wrong


def test_noise_donations_pass_validation_and_enter_the_seed_set():
    args = attacks.parser().parse_args(TINY)
    row = attacks.run_cell("noise-donation", "FedH2L", 0, args)
    assert row["status"] == "completed"
    first = _metrics("attacks-noise-donation-fedh2l-s0")[0]
    assert "1000" not in first["dropped"]  # well-formed: only its content is poison
