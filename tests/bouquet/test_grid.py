"""Grid files: errors that name the problem, cells, and resume across sittings (tiny real runs
on digits, in process)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from bouquet.cli import main
from bouquet.grid import GridError, cell_status, load_grid, plan, run_cell, run_grid

TINY = {"dataset": "digits", "num-partitions": 2, "num-server-rounds": 2, "local-steps": 5}


def write(tmp_path, spec):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"sweep": {"method": ["fedavg"]}, "seeds": [0], "rounds": 3}, "unknown grid keys"),
        ({"sweep": {"method": "fedavg"}}, "sweep must map each setting to a non-empty list"),
        ({"sweep": {"method": []}}, "sweep must map each setting to a non-empty list"),
        ({"seeds": ["zero"]}, "seeds must be a non-empty list of integers"),
        ({"sweep": {"method": ["fedsgd"]}}, "cell method=fedsgd-seed=0: method='fedsgd'"),
        ({"settings": {"alhpa": 0.1}}, "unknown run-config keys ['alhpa']"),
    ],
)
def test_a_bad_grid_file_is_refused_before_anything_runs(tmp_path, spec, message):
    with pytest.raises(GridError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_grid(write(tmp_path, spec), tmp_path)
    assert not (tmp_path / "outputs").exists()


def test_cells_are_the_product_of_the_sweep_and_the_seeds(tmp_path):
    grid = load_grid(
        write(
            tmp_path,
            {
                "name": "g",
                "settings": TINY,
                "sweep": {"method": ["fedavg", "fedprox"], "alpha": [0.1, 1.0]},
                "seeds": [0, 1],
            },
        ),
        tmp_path,
    )
    assert len(grid.cells) == 8 and grid.output_dir == tmp_path / "outputs" / "grids" / "g"
    first = grid.cells[0]
    assert first.name == "method=fedavg-alpha=0.1-seed=0"
    assert first.settings == {
        **TINY,
        "method": "fedavg",
        "alpha": 0.1,
        "seed": 0,
        "run-name": first.name,
    }


def test_a_grid_resumes_where_it_stopped(tmp_path, capsys):
    spec = {
        "name": "g",
        "settings": TINY,
        "sweep": {"method": ["fedavg", "fedprox"]},
        "seeds": [0],
        "output-dir": str(tmp_path / "out"),
    }
    grid = load_grid(write(tmp_path, spec), tmp_path)
    (done,) = run_grid(
        load_grid(write(tmp_path, {**spec, "sweep": {"method": ["fedavg"]}}), tmp_path)
    )
    assert done[1]["status"] == "completed"
    fedavg, fedprox = grid.cells
    assert cell_status(grid.run_dir(fedavg)) == "completed"
    assert [c.name for c, _ in plan(grid)] == [fedprox.name]  # only what is left

    # An interrupted cell (rounds and a checkpoint, no final status) resumes, and a cell that
    # failed before its first round is set aside, not deleted.
    summary = json.loads((grid.run_dir(fedavg) / "summary.json").read_text())
    (grid.run_dir(fedavg) / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    assert cell_status(grid.run_dir(fedavg)) == "resumable"
    shutil.copytree(grid.run_dir(fedavg), grid.run_dir(fedprox))
    (grid.run_dir(fedprox) / "metrics.jsonl").unlink()
    assert cell_status(grid.run_dir(fedprox)) == "failed"
    todo = dict((c.name, s) for c, s in plan(grid))
    assert todo[fedavg.name]["resume"] is True and todo[fedprox.name]["resume"] is False
    assert (tmp_path / "out" / "g" / f"{fedprox.name}.failed-1" / "config.yaml").is_file()

    assert main(["grid", str(write(tmp_path, spec))]) == 0
    assert "0 already completed, 2 to run" in capsys.readouterr().out
    rows = (grid.run_dir(fedavg) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["round"] for r in rows] == [1, 2]  # resumed, not rerun from scratch
    assert all(cell_status(grid.run_dir(c)) == "completed" for c in grid.cells)
    assert main(["grid", str(write(tmp_path, spec)), "--list"]) == 0
    assert capsys.readouterr().out.count("completed") == 2


def test_cells_run_in_parallel_processes(tmp_path):
    spec = {
        "name": "p",
        "settings": {**TINY, "num-server-rounds": 1},
        "sweep": {"method": ["fedavg", "fedprox"]},
        "seeds": [0],
        "output-dir": str(tmp_path / "out"),
    }
    grid = load_grid(write(tmp_path, spec), tmp_path)
    results = run_grid(grid, jobs=2)
    assert [r["status"] for _, r in results] == ["completed", "completed"]
    assert all(cell_status(grid.run_dir(c)) == "completed" for c in grid.cells)


def _final(summary):
    return {k: (m["accuracy"], m["loss"]) for k, m in summary["final-per-model"].items()}


def test_a_resumed_cell_continues_its_clients_private_models(tmp_path, caplog):
    """FedH2L's clients keep private models on the nodes. A cell interrupted after round 2 and
    resumed restores them from its node-state folder and ends exactly as the uninterrupted run
    does; without that folder the resumed clients restart from fresh models and end elsewhere."""
    settings = {**TINY, "method": "fedh2l", "num-partitions": 3, "num-server-rounds": 3}
    full = run_cell({**settings, "run-name": "full"}, str(tmp_path))
    assert full["status"] == "completed"
    assert not (tmp_path / "full" / "node-state").exists()  # removed once the run completed

    def cut_after_round_2(instruction, reply):
        if instruction.metadata.group_id == "3":
            raise RuntimeError("interrupted")
        return reply

    outcomes = {}
    for name in ("kept", "lost"):
        with pytest.raises(RuntimeError, match="interrupted"):
            run_cell({**settings, "run-name": name}, str(tmp_path), reply_hook=cut_after_round_2)
        nodes = sorted((tmp_path / name / "node-state").glob("*/partition-*"))
        saved = [sorted(p.name for p in node.iterdir()) for node in nodes]
        # Per node the two newest rounds; the first node had trained round 3 when it stopped.
        assert saved == [["round-2.pb", "round-3.pb"]] + [["round-1.pb", "round-2.pb"]] * 2
        if name == "lost":
            shutil.rmtree(tmp_path / name / "node-state")
        outcomes[name] = run_cell({**settings, "run-name": name, "resume": True}, str(tmp_path))
    assert [r["round"] for r in _rows(tmp_path / "kept")] == [1, 2, 3]
    # The server says what a resume means for nodes without a state-dir.
    assert "start afresh while the server continues from round 2" in caplog.text
    assert _final(outcomes["kept"]) == _final(full)
    assert _final(outcomes["lost"]) != _final(full)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
