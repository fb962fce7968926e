"""The warm per-node worker: same replies and state as in process, and every way it can be
missing (none, dead mid-message, other code) falls back to running the message here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from client_app import worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _counting_app() -> ClientApp:
    """Counts its calls in the node state; replies with what it saw."""
    app = ClientApp(mods=[worker.warm_worker])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if "count" not in context.state.config_records:
            context.state["count"] = ConfigRecord({"n": 0})
        context.state.config_records["count"]["n"] += 1
        seen = ConfigRecord(
            {"node-config": json.dumps(dict(context.node_config)), "pid": os.getpid()}
        )
        return Message(RecordDict({"seen": seen}), reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        raise ValueError("bad input on this node")

    return app


def _message(kind: str = "train") -> Message:
    return Message(RecordDict(), dst_node_id=3, message_type=kind, group_id="1")


def _serve_in_thread(path: Path, app: ClientApp, messages: int) -> threading.Thread:
    thread = threading.Thread(
        target=worker.serve, args=(path, app), kwargs={"max_messages": messages}, daemon=True
    )
    thread.start()
    for _ in range(100):
        if path.exists():
            return thread
        time.sleep(0.02)
    raise AssertionError("the worker did not listen")


def test_the_worker_runs_the_message_and_the_state_comes_back(tmp_path):
    app, sock = _counting_app(), tmp_path / "node.sock"
    thread = _serve_in_thread(sock, app, messages=2)
    assert sock.stat().st_mode & 0o777 == 0o600  # this user's processes only
    context = Context(1, 3, {"worker": str(sock), "partition-id": 0}, RecordDict(), {})
    for expected in (1, 2):
        reply = app(_message(), context)
        assert context.state.config_records["count"]["n"] == expected  # state round-trips
    thread.join(5)
    seen = json.loads(str(reply.content.config_records["seen"]["node-config"]))
    assert seen == {"partition-id": 0}  # the worker ran it, without forwarding again
    assert not sock.exists()  # a worker that stops removes its socket


def test_a_handler_error_in_the_worker_is_raised_here_not_rerun(tmp_path):
    app, sock = _counting_app(), tmp_path / "node.sock"
    thread = _serve_in_thread(sock, app, messages=1)
    context = Context(1, 3, {"worker": str(sock)}, RecordDict(), {})
    with pytest.raises(worker.WorkerRaised, match="ValueError: bad input on this node"):
        app(_message("query"), context)
    thread.join(5)


def test_without_a_worker_the_message_runs_here_and_says_why(tmp_path, capsys):
    app = _counting_app()
    missing = tmp_path / "nobody.sock"
    context = Context(1, 3, {"worker": str(missing)}, RecordDict(), {})
    reply = app(_message(), context)
    assert reply.content.config_records["seen"]["pid"] == os.getpid()
    assert context.state.config_records["count"]["n"] == 1
    assert f"worker {missing}: FileNotFoundError" in capsys.readouterr().err


def test_a_worker_dying_mid_message_falls_back_to_running_here(tmp_path):
    sock = tmp_path / "dies.sock"
    listener = Listener(str(sock), family="AF_UNIX")

    def die_after_reading() -> None:
        with listener.accept() as conn:
            for _ in range(3):
                conn.recv_bytes()  # takes the message, then "crashes" before replying

    thread = threading.Thread(target=die_after_reading, daemon=True)
    thread.start()
    app = _counting_app()
    context = Context(1, 3, {"worker": str(sock)}, RecordDict(), {})
    reply = app(_message(), context)
    thread.join(5)
    listener.close()
    assert reply.content.config_records["seen"]["pid"] == os.getpid()
    assert context.state.config_records["count"]["n"] == 1  # run exactly once, here


def test_a_worker_running_other_code_refuses_the_message(tmp_path):
    app, sock = _counting_app(), tmp_path / "node.sock"
    thread = _serve_in_thread(sock, app, messages=1)
    context = Context(1, 3, {"worker": str(sock)}, RecordDict(), {})
    with pytest.raises(worker.WorkerUnavailable, match="other client code"):
        worker.forward(sock, _message(), context, fingerprint="0" * 64)  # another checkout
    thread.join(5)
    assert "count" not in context.state.config_records  # not run there


def test_the_fingerprint_follows_the_client_sources(tmp_path):
    for package in worker.CLIENT_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("x = 1\n")
    before = worker.code_fingerprint.__wrapped__(tmp_path)
    (tmp_path / "models" / "__init__.py").write_text("x = 2\n")
    assert worker.code_fingerprint.__wrapped__(tmp_path) != before
    (tmp_path / "README.md").write_text("not client code")
    assert worker.code_fingerprint.__wrapped__(tmp_path) == worker.code_fingerprint.__wrapped__(
        tmp_path
    )


def test_a_stale_socket_is_cleared_and_a_live_one_refused(tmp_path):
    sock = tmp_path / "node.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(sock))  # a worker killed by SIGKILL leaves its socket file behind
    dead.close()
    assert sock.exists()
    worker._clear_stale_socket(sock)
    assert not sock.exists()
    live = Listener(str(sock), family="AF_UNIX")
    with pytest.raises(SystemExit, match="already listens"):
        worker._clear_stale_socket(sock)
    live.close()


def test_a_federation_through_workers_matches_one_without(tmp_path):
    """Two nodes, each with a worker process: FedAvg on digits gives the same metrics as the
    same run in process, every reply came through a worker, and SIGTERM removes the socket."""
    from bouquet.grid import run_cell

    settings = {
        "dataset": "digits",
        "num-partitions": 2,
        "num-server-rounds": 2,
        "local-steps": 5,
        "seed": 3,
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    socks = [tmp_path / f"w{i}.sock" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "client_app.worker", "--socket", str(s)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in socks
    ]
    try:
        for proc in procs:
            assert "listening" in proc.stdout.readline()
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            extras = {i: {"worker": str(s), "threads": 1} for i, s in enumerate(socks)}
            warm = run_cell({**settings, "run-name": "warm"}, str(tmp_path), node_extras=extras)
            plain = {i: {"threads": 1} for i in range(2)}
            cold = run_cell({**settings, "run-name": "cold"}, str(tmp_path), node_extras=plain)
        finally:
            torch.set_num_threads(threads)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        logs = [proc.communicate(timeout=30)[0] for proc in procs]
    assert warm["final-accuracy"] == cold["final-accuracy"]
    assert warm["final-loss"] == cold["final-loss"]
    for log in logs:
        assert log.count("[worker] train") == 2  # two rounds, each node's training there
    assert not any(s.exists() for s in socks)
