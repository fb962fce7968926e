"""benchmarks/mosaic.py --resume keeps finished rows, refuses DENSE rows made with another
--dense-kd-passes, and --rerun runs a method's planned cells again (no training: run_cell is
replaced by a stand-in that copies a saved row)."""

import copy
import json
import sys
from pathlib import Path

import pytest

from benchmarks import mosaic

SAVED = json.loads((Path(mosaic.__file__).parent / "results" / "mosaic.json").read_text())
# The plans below are --headline-only: the saved table's other cells are left out of it.
SAVED["results"] = [r for r in SAVED["results"] if (r["alpha"], r["models"]) in mosaic.HEADLINE]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    monkeypatch.setattr(mosaic, "OUT", tmp_path)
    (tmp_path / "mosaic.json").write_text(json.dumps(SAVED))
    ran = []

    def fake_run_cell(alpha, models, method, seed, args):
        ran.append((alpha, models, method, seed))
        like = next(r for r in SAVED["results"] if r["method"] == method)
        row = {**copy.deepcopy(like), "alpha": alpha, "models": models, "seed": seed}
        if method == "DENSE":
            row["dense-kd-passes"] = args.dense_kd_passes
        return row

    monkeypatch.setattr(mosaic, "run_cell", fake_run_cell)

    def main(*argv):
        settings = SAVED["meta"]["settings"]
        same = ["--generator-steps", str(settings["generator_steps"]), "--headline-only"]
        monkeypatch.setattr(sys, "argv", ["mosaic", "--resume", *same, *argv])
        mosaic.main()
        return json.loads((tmp_path / "mosaic.json").read_text())["results"]

    return main, ran


def test_saved_dense_rows_of_another_pass_count_need_rerun(bench):
    main, ran = bench
    if not any(r["method"] == "DENSE" for r in SAVED["results"]):
        pytest.skip("no DENSE rows saved")
    passes = {r.get("dense-kd-passes", 1) for r in SAVED["results"] if r["method"] == "DENSE"}
    other = str(max(passes) + 1)
    with pytest.raises(SystemExit, match="--rerun DENSE"):
        main("--dense-kd-passes", other)
    assert ran == []


def test_rerun_replaces_only_the_planned_cells_of_that_method(bench):
    main, ran = bench
    # Methods the saved table lacks would run too (--resume completes a table): not here.
    others = ",".join(m for m in mosaic.METHODS if m != "DENSE")
    results = main("--dense-kd-passes", "7", "--rerun", "DENSE", "--skip", others)
    assert ran and {m for (_, _, m, _) in ran} == {"DENSE"}
    assert {(a, m, s) for (a, m, _, s) in ran} == {
        (a, m, s) for s in (0, 1, 2) for (a, m) in mosaic.HEADLINE
    }
    dense = [r for r in results if r["method"] == "DENSE"]
    assert len(dense) == len(ran) and all(r["dense-kd-passes"] == 7 for r in dense)
    kept = [r for r in results if r["method"] != "DENSE"]
    assert kept == [r for r in SAVED["results"] if r["method"] != "DENSE"]


def test_an_unknown_method_is_named(bench):
    main, _ = bench
    with pytest.raises(SystemExit, match="unknown methods \\['Dense'\\]"):
        main("--rerun", "Dense")


def test_a_rerun_that_leaves_other_pass_counts_in_the_table_is_refused(bench):
    main, ran = bench
    seeds = {r["seed"] for r in SAVED["results"] if r["method"] == "DENSE"}
    if len(seeds) < 2:
        pytest.skip("DENSE rows of one seed only")
    with pytest.raises(SystemExit, match="ran with another --dense-kd-passes"):
        main("--dense-kd-passes", "7", "--rerun", "DENSE", "--headline-seeds", str(min(seeds)))
    assert ran == []


def test_method_lists_keep_names_that_hold_a_comma_whole():
    assert mosaic._methods("Mosaic, gated,DENSE", "--skip") == {"Mosaic, gated", "DENSE"}
    assert mosaic._methods("Mosaic,Mosaic, features", "--skip") == {"Mosaic", "Mosaic, features"}
    with pytest.raises(SystemExit, match="unknown methods \\['gated'\\]"):
        mosaic._methods("gated,DENSE", "--skip")


def test_mnist10k_gets_its_own_table_clients_and_run_names(bench, tmp_path):
    main, ran = bench
    before = (tmp_path / "mosaic.json").read_text()
    others = ",".join(m for m in mosaic.METHODS if m != "FedAvg")
    # A Fashion-MNIST table under the MNIST-10k name is refused, and the refusal names why.
    (tmp_path / "mosaic-mnist10k.json").write_text(before)
    with pytest.raises(
        SystemExit, match="dataset=fmnist \\(now mnist10k\\), clients=10 \\(now 8\\)"
    ):
        main("--dataset", "mnist10k", "--skip", others)
    assert ran == []
    (tmp_path / "mosaic-mnist10k.json").unlink()
    main("--dataset", "mnist10k", "--skip", others)
    assert ran and {m for (_, _, m, _) in ran} == {"FedAvg"}
    assert (tmp_path / "mosaic.json").read_text() == before
    saved = json.loads((tmp_path / "mosaic-mnist10k.json").read_text())
    assert saved["meta"]["settings"]["dataset"] == "mnist10k"
    assert saved["meta"]["settings"]["clients"] == 8
    assert "MNIST-10k" in saved["meta"]["data"] and len(saved["results"]) == len(ran) == 6
    assert (tmp_path / "mosaic-mnist10k.md").exists()


def test_cells_name_their_dataset():
    args = mosaic.parse_args(["--dataset", "mnist10k"])
    assert args.clients == 8
    assert mosaic.cell_settings(0.1, "one architecture", "FedAvg", args)["dataset"] == "mnist10k"
    assert mosaic.run_name(0.1, "one architecture", "FedAvg", 0) == (
        "mosaic-bench-fedavg-a0.1-cnn-small-s0"
    )
    assert mosaic.run_name(0.1, "one architecture", "FedAvg", 0, "mnist10k") == (
        "mosaic-bench-mnist10k-fedavg-a0.1-cnn-small-s0"
    )


def test_only_runs_the_methods_it_names(bench):
    main, ran = bench
    results = main("--only", "FedAvg", "--rerun", "FedAvg,DENSE")
    # Rerun's DENSE rows are dropped but not run again: --only leaves DENSE out this time.
    assert ran and {m for (_, _, m, _) in ran} == {"FedAvg"}
    assert {(a, m, s) for (a, m, _, s) in ran} == {
        (a, m, s) for s in (0, 1, 2) for (a, m) in mosaic.HEADLINE
    }
    assert not [r for r in results if r["method"] == "DENSE"]
    with pytest.raises(SystemExit, match="--only: unknown methods \\['Fedavg'\\]"):
        main("--only", "Fedavg")
