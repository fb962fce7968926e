"""benchmarks/deployment.py's bookkeeping: medians over repeats and the comparison columns."""

import pytest

from benchmarks import deployment


def _repeat(round_s: float, handoff: float = 0.0) -> dict:
    return {
        "rounds": 6,
        "wall": 60.0,
        "round": round_s,
        "compute": 0.2,
        "overhead": round_s - 0.2,
        "startup": 1.5,
        "imports": 0.0,
        "load": 0.0,
        "handoff": handoff,
        "polling": 1.0,
        "server": 0.02,
    }


def test_a_mode_s_row_is_the_median_of_its_repeats_with_the_range():
    row = deployment.median_row([_repeat(3.0), _repeat(9.0), _repeat(4.0, 0.03)])
    assert row["round"] == 4.0 and row["round-range"] == [3.0, 9.0]
    assert row["handoff"] == 0.0 and len(row["repeats"]) == 3


def test_the_table_compares_every_mode_with_simulation_and_in_process():
    results = [
        {"experiment": "minimal", "mode": m, "rounds": 6, **deployment.median_row([_repeat(r)])}
        for m, r in (("in-process", 2.0), ("simulation", 1.0), ("deployed", 3.0))
    ]
    lines = deployment.table(results)
    deployed = next(line for line in lines if "| deployed |" in line)
    assert "| 3.00 (3.00-3.00) |" in deployed
    assert "| 3.00 | 1.50 |" in deployed  # x simulation, x in-process
    in_process = next(line for line in lines if "| in-process |" in line)
    assert in_process.count("| - ") >= 6  # warm processes: no per-message breakdown


def test_unknown_modes_are_refused(monkeypatch):
    monkeypatch.setattr("sys.argv", ["deployment", "--modes", "deployed;teleported"])
    with pytest.raises(SystemExit, match="teleported"):
        deployment.main()
