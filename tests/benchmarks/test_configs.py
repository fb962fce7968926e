"""The experiment files behind the Mosaic table's cells (configs/mosaic-*.yaml) hold exactly the
settings benchmarks/mosaic.py runs them with, so ``bouquet run configs/...`` reproduces a cell."""

from __future__ import annotations

import re

import pytest

from benchmarks import mosaic
from benchmarks.harness import ROOT
from server_app.config import load_config

CONFIGS = sorted((ROOT / "configs").glob("mosaic-fmnist-*.yaml"))
NAME = re.compile(
    r"mosaic-fmnist-a(?P<alpha>[0-9.]+)-(?P<models>cnn-small|heterogeneous)"
    r"(?P<one_shot>-one-shot)?\.yaml"
)
# The settings that place or name a run, not what it computes.
PLACE = ("experiment", "run-name", "output-dir", "seed")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_mosaic_config_is_its_benchmark_cell(path):
    match = NAME.fullmatch(path.name)
    assert match, f"{path.name}: not a cell name"
    models = {v: k for k, v in mosaic.MODELS.items()}[match["models"]]
    method = "Mosaic one-shot" if match["one_shot"] else "Mosaic"
    args = mosaic.parse_args([])
    cell = mosaic.cell_settings(float(match["alpha"]), models, method, args)
    want = load_config({"dataset": "fmnist", "num-partitions": args.clients, **cell}).as_dict()
    got = load_config({"experiment": str(path), "num-partitions": args.clients}).as_dict()
    for key in PLACE:
        want.pop(key), got.pop(key)
    assert got == want


def test_every_headline_cell_has_a_config():
    names = {p.name for p in CONFIGS}
    for alpha, _ in mosaic.HEADLINE:
        assert f"mosaic-fmnist-a{alpha}-heterogeneous.yaml" in names


FMD_CELLS = {
    "fmd-fmnist-1class.yaml": "1 class/client",
    "fmd-fmnist-a0.01.yaml": "dirichlet a=0.01",
}


@pytest.mark.parametrize("name,partition", FMD_CELLS.items())
def test_an_fmd_config_is_its_benchmark_cell(name, partition):
    from benchmarks import fmd

    args = fmd.parser().parse_args([])
    cell = fmd.cell_settings(partition, "FMD", args)
    want = load_config({"dataset": "fmnist", "num-partitions": args.clients, **cell}).as_dict()
    got = load_config({"experiment": str(ROOT / "configs" / name), "num-partitions": args.clients})
    got_dict = got.as_dict()
    for key in PLACE:
        want.pop(key), got_dict.pop(key)
    assert got_dict == want
    assert set(FMD_CELLS.values()) == set(fmd.HEADLINE)  # both headline cells have a file


PRISM_NAME = re.compile(
    r"(?P<method>prism-no-mada|prism|fedavg-generator)-(?P<dataset>fmnist|mnist10k)-"
    r"(?P<split>iid|noniid)(?P<dp>-dp)?\.yaml"
)
PRISM_METHODS = {
    "prism": "PRISM",
    "prism-no-mada": "PRISM, no MADA",
    "fedavg-generator": "FedAvg generator",
}
PRISM_CONFIGS = sorted(
    p for p in (ROOT / "configs").glob("*.yaml") if p.name.startswith(("prism", "fedavg-gen"))
)


@pytest.mark.parametrize("path", PRISM_CONFIGS, ids=lambda p: p.stem)
def test_a_prism_config_is_its_benchmark_cell(path):
    from benchmarks import prism

    match = PRISM_NAME.fullmatch(path.name)
    assert match, f"{path.name}: not a cell name"
    split = "IID" if match["split"] == "iid" else "non-IID (4 shards)"
    eps = prism.DP_EPSILON if match["dp"] else 0.0
    args = prism.parser().parse_args([])
    cell = prism.cell_settings(
        match["dataset"], split, PRISM_METHODS[match["method"]], eps, "small", args
    )
    want = load_config({"num-partitions": args.clients, **cell}).as_dict()
    got = load_config({"experiment": str(path), "num-partitions": args.clients}).as_dict()
    for key in PLACE:
        want.pop(key), got.pop(key)
    assert got == want
