"""benchmarks/prism.py --preset paper: the paper's scale resolves to valid experiments (the run
itself needs a GPU and internet, neither of which CI has)."""

from __future__ import annotations

from benchmarks import prism
from server_app.config import load_config


def test_paper_preset_resolves_to_the_papers_schedule_on_its_datasets():
    args = prism.resolve(prism.parser().parse_args(["--preset", "paper", "--device", "cpu"]))
    cells = prism.plan(args)
    assert {c[0] for c in cells} == {"cifar10", "celeba"}
    assert {c[4] for c in cells} == {"full"} and len(cells) == 2 * 3 * len(prism.METHODS)
    for dataset, split, method, eps, size in cells:
        settings = prism.cell_settings(dataset, split, method, eps, size, args)
        cfg = load_config({"num-partitions": args.clients, **settings}).as_dict()
        assert cfg["num-server-rounds"] == 500 and cfg["local-steps"] == 100
        assert cfg["batch-size"] == 64 and cfg["prism-generator"] == "full"
        assert cfg["download"] is True
    assert args.out_name == "prism-paper"


def test_default_plan_keeps_its_communication_rows():
    args = prism.resolve(prism.parser().parse_args([]))
    full = [c for c in prism.plan(args) if c[4] == "full"]
    assert len(full) == 2 and all(prism._communication_only("full", args) for _ in full)
    settings = prism.cell_settings(*full[0], args)
    assert settings["num-server-rounds"] == 1 and "download" not in settings
