"""compare's statistics on hand-made run directories (numbers checked by hand)."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from bouquet import compare
from bouquet.cli import main


def make_run(root, name, method, seed, curve, status="completed", alpha=0.1, **summary):
    path = root / name
    path.mkdir(parents=True)
    config = {"method": method, "alpha": alpha, "seed": seed, "run-name": name, "resume": False}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [
        {"round": i + 1, "accuracy": a, "bytes-down": 100_000, "bytes-up": 50_000}
        for i, a in enumerate(curve)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "summary.json").write_text(
        json.dumps(
            {
                "status": status,
                "final-accuracy": curve[-1],
                "best-accuracy": max(curve),
                "final-loss": 0.5,
                "final-per-model": {},
                "rounds-completed": len(curve),
                "total-bytes-down": 100_000 * len(curve),
                "total-bytes-up": 50_000 * len(curve),
                "seconds": 10.0,
                **summary,
            }
        )
    )
    return path


@pytest.fixture
def runs(tmp_path):
    make_run(tmp_path, "a0", "fedavg", 0, [0.5, 0.6, 0.70])
    make_run(tmp_path, "a1", "fedavg", 1, [0.5, 0.6, 0.80])
    make_run(tmp_path, "a2", "fedavg", 2, [0.5, 0.6, 0.90])
    make_run(tmp_path, "b0", "mosaic", 0, [0.6, 0.8, 0.75])
    make_run(tmp_path, "b1", "mosaic", 1, [0.6, 0.8, 0.90])
    make_run(tmp_path, "b2", "mosaic", 2, [0.6, 0.8, 0.85], status="failed")
    return tmp_path


def test_runs_that_differ_by_seed_form_one_cell_with_mean_and_sample_std(runs):
    cells = compare.group(compare.find_runs([runs]))
    assert [c.settings["method"] for c in cells] == ["fedavg", "mosaic"]
    fedavg, mosaic = cells
    assert fedavg.seeds == [0, 1, 2] and mosaic.seeds == [0, 1]  # the failed run is not averaged
    mean, std = fedavg.stats("final")
    assert mean == pytest.approx(0.8) and std == pytest.approx(0.1)  # ddof=1: sqrt(0.02/2)
    assert fedavg.stats("best") == pytest.approx((0.8, 0.1))
    assert fedavg.stats("last-k", last_k=2) == pytest.approx((0.7, 0.05))  # (0.65, 0.7, 0.75)
    assert compare.varying(cells) == ["method"]


def test_one_seed_has_no_std(tmp_path):
    make_run(tmp_path, "only", "fedavg", 0, [0.4])
    (cell,) = compare.group(compare.find_runs([tmp_path]))
    mean, std = cell.stats("final")
    assert mean == 0.4 and math.isnan(std)
    assert "0.400 [0.400]" in compare.table([cell])


def test_gaps_are_paired_by_seed(runs):
    cells = compare.group(compare.find_runs([runs]))
    (gap,) = compare.paired_gaps(cells, "method", "fedavg", "final")
    assert gap["seeds"] == [0, 1]  # seed 2 of mosaic failed: no pair
    assert gap["gaps"] == pytest.approx([0.05, 0.10])
    assert gap["mean"] == pytest.approx(0.075)
    assert gap["std"] == pytest.approx(math.sqrt(2 * 0.025**2))


def test_the_table_shows_every_seed_beside_the_mean(runs):
    text = compare.table(compare.group(compare.find_runs([runs])))
    assert "| fedavg | 0,1,2 | 0.800 ± 0.100 [0.700, 0.800, 0.900] |" in text
    assert "| 0.15 | 10 |" in text  # 150 kB per round, 10 s


def test_compare_command_writes_table_gaps_and_plot(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(
            ["compare", str(runs), "--gap-by", "method", "--reference", "fedavg", "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "not counted" in printed and "b2 failed" in printed
    assert "+0.075 ± 0.035" in printed and "s0: +0.050, s1: +0.100" in printed
    assert (out / "compare.png").stat().st_size > 1000
    assert (out / "compare.md").read_text().startswith("| method |")


def test_bad_run_directories_are_named(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match=r"half is not a run directory: config\.yaml is missing"):
        compare.find_runs([tmp_path])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["compare", str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no run directory"):
        main(["compare", str(tmp_path / "empty")])
