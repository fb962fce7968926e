"""scripts/deploy.py's wait for a started SuperNode to join: the outcome read from its log,
including Flower's refusal (code 2004) of a key whose crashed node the SuperLink still holds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import deploy  # noqa: E402 (scripts/ is not a package)


def _node(tmp_path: Path, log: str, pid: int) -> object:
    lay = deploy.Layout(tmp_path, tmp_path / "certs", True, "subprocess", "127.0.0.1:1", "", 1)
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "pids").mkdir(exist_ok=True)
    (tmp_path / "logs" / "supernode-0.log").write_text("an earlier life\n[code: 2004]\n" + log)
    (tmp_path / "pids" / "supernode-0.pid").write_text(str(pid))
    return lay


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("log", "alive", "outcome"),
    [
        ("INFO: SuperNode ID: 42\n", True, "active"),
        (
            "ERROR: Exit Code: 305\n[code: 2004] Failed to activate SuperNode.\n",
            False,
            "identity-held",
        ),
        ("ERROR: Exit Code: 300\n", False, "exited"),
        ("WARNING: Connection attempt failed, retrying\n", True, "connecting"),
    ],
)
def test_a_started_node_s_outcome_is_read_from_its_log_past_the_start(
    tmp_path, log, alive, outcome
):
    offset = len("an earlier life\n[code: 2004]\n")  # an older attempt's lines never count
    lay = _node(tmp_path, log, 1 if alive else _dead_pid())  # PID 1 is always alive
    t0 = time.monotonic()
    assert deploy.wait_activated(lay, "supernode-0", offset, time.monotonic() + 0.5) == outcome
    assert time.monotonic() - t0 < 2


def test_a_worker_socket_fits_a_unix_socket_path(tmp_path):
    short = deploy.Layout(tmp_path, tmp_path, True, "subprocess", "127.0.0.1:1", "", 1)
    if len(str(tmp_path)) < 60:
        assert deploy.worker_socket(short, 3) == tmp_path / "workers" / "supernode-3.sock"
    deep = tmp_path / ("d" * 120)
    lay = deploy.Layout(deep, deep, True, "subprocess", "127.0.0.1:1", "", 1)
    sock = deploy.worker_socket(lay, 3)
    assert len(str(sock)) < 100  # AF_UNIX paths end at 108 bytes
    assert sock != deploy.worker_socket(short, 3)  # one per state directory and node
    assert sock.name.endswith("-3.sock")
