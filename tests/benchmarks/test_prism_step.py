"""benchmarks/prism_step.py on the CPU with tiny settings: it times the client's real loop, with
and without the folded batch norms, and extrapolates the paper's schedule from the median."""

from __future__ import annotations

from benchmarks import prism_step


def test_step_timing_table(tmp_path, monkeypatch):
    monkeypatch.setattr(prism_step, "OUT", tmp_path)
    argv = ["--sizes", "small", "--batches", "2", "--steps", "1", "--warmup", "1"]
    report = prism_step.main([*argv, "--repeats", "2", "--compare-unfolded"])
    unfolded, folded = report["rows"]
    assert (unfolded["bn-folded"], folded["bn-folded"]) == (False, True)
    for row in report["rows"]:
        assert row["masked-weights"] == 418_192 and row["threads"] >= 1
        low, high = row["spread"]
        assert 0 < low <= row["seconds-per-step"] <= high
        # Hours are rounded to 0.1 from the unrounded median, seconds to 4 decimals: both
        # roundings bound the difference.
        hours = row["seconds-per-step"] * prism_step.PAPER_STEPS / 3600
        seconds_rounding = 0.5e-4 * prism_step.PAPER_STEPS / 3600
        assert abs(row["paper-schedule-hours"] - hours) <= 0.05 + seconds_rounding + 1e-9
    assert "| small | 418,192 | 2 | cpu |" in (tmp_path / "prism-step.md").read_text()
