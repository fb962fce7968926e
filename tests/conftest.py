"""Shared fixtures: a project-local data directory and Flower's offline environment."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("BOUQUET_DATA_DIR", str(ROOT / ".data"))
os.environ.setdefault("FLWR_HOME", str(ROOT / ".flwr_home"))
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"


@pytest.fixture(scope="session")
def digits():
    from federated_data.sources import load_source

    return load_source("digits")


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def free_ports() -> Callable[[int], list[int]]:
    """``free_ports(n)``: n consecutive loopback ports, free now and never handed out twice in
    a session. They lie below the kernel's ephemeral range, so no outgoing connection (a
    flwr CLI call, a SuperNode's gRPC channel) can take one before the server that gets it
    binds it: with ports from bind(0), a SuperNode started later in CI once found its port
    taken and never came online."""
    handed_out: set[int] = set()
    top = _ephemeral_start()
    rng = random.Random(os.getpid())

    def take(n: int = 1) -> list[int]:
        for _ in range(1000):
            base = rng.randrange(10000, top - n)
            ports = list(range(base, base + n))
            if handed_out.isdisjoint(ports) and all(_bindable(p) for p in ports):
                handed_out.update(ports)
                return ports
        raise RuntimeError(f"no {n} consecutive free loopback ports below {top}")

    return take
