"""benchmarks/gpu.py with the device forced to the CPU (no GPU on CI): every method it names
runs with its nodes' device set, and the FedAvg timing compares two real runs."""

from __future__ import annotations

import pytest

from benchmarks import gpu


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    from benchmarks import harness

    monkeypatch.setattr(harness, "OUT", tmp_path)
    monkeypatch.setattr(gpu, "OUT", tmp_path)


def test_the_gpu_script_runs_on_a_forced_device(tmp_path):
    argv = ["--device", "cpu", "--methods", "fedavg,fmd,prism", "--round-dataset", "digits"]
    report = gpu.main([*argv, "--rounds", "2"])
    assert [r["method"] for r in report["methods"]] == ["fedavg", "fmd", "prism"]
    assert all(r["status"] == "completed" and r["device"] == "cpu" for r in report["methods"])
    assert report["round"]["device-seconds"] > 0 and report["round"]["cpu-seconds"] > 0
    assert "| prism | completed |" in (tmp_path / "gpu.md").read_text()
    with pytest.raises(ValueError, match="not a torch device"):
        gpu.main(["--device", "toaster", "--skip-round"])


def test_every_method_of_the_registry_is_checked():
    from server_app.methods import METHODS

    assert set(gpu.METHODS) == set(METHODS)
