"""scripts/fast_supernode.py: Flower's SuperNode with its idle poll capped, and nothing else."""

import importlib.util
import time
from pathlib import Path

import flwr
import pytest
from flwr.supernode import start_client_internal

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fast_supernode", ROOT / "scripts/fast_supernode.py")
assert spec and spec.loader
fast_supernode = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fast_supernode)


@pytest.fixture
def restore(monkeypatch):
    monkeypatch.setattr(start_client_internal, "time", start_client_internal.time)


def test_the_loop_sleeps_are_capped_and_the_rest_of_time_is_untouched(restore):
    fast_supernode.patch(0.05)
    patched = start_client_internal.time
    t0 = time.monotonic()
    patched.sleep(3)  # the idle poll of Flower 1.39
    assert time.monotonic() - t0 < 0.5
    assert patched.time() == pytest.approx(time.time(), abs=1.0)  # passes through
    assert patched.monotonic is time.monotonic


def test_refuses_another_flower(restore, monkeypatch):
    monkeypatch.setattr(flwr, "__version__", "1.40.0")
    with pytest.raises(SystemExit, match=r"written for Flower 1\.39"):
        fast_supernode.patch(0.25)
    assert start_client_internal.time is time  # nothing was patched


@pytest.mark.parametrize("cap", [0.0, 5.0])
def test_rejects_a_silly_interval(restore, cap):
    with pytest.raises(SystemExit, match=r"between 0\.01 and 3 s"):
        fast_supernode.patch(cap)
