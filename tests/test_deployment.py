"""A real deployment on 127.0.0.1: SuperLink and SuperNodes as separate processes over gRPC,
started by scripts/deploy.py with TLS and SuperNode authentication, a run submitted through
the flwr CLI and checked with `flwr ls`; strangers are rejected; every process is stopped."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def flwr_json(env: dict[str, str], connection: str, *args: str) -> dict:
    """A flwr CLI command against the SuperLink of ``connection``, its JSON answer."""
    done = subprocess.run(
        ["flwr", *args, connection, "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout)


pytestmark = pytest.mark.deployment
# The small experiment of the same-results checks: 2 nodes, digits, 2 rounds.
TINY = {"dataset": "digits", "num-partitions": 2, "num-server-rounds": 2, "local-steps": 10}


def _toml(overrides: dict) -> str:
    """Config overrides as the TOML of `flwr run --run-config`."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        return f'"{v}"' if isinstance(v, str) else str(v)

    return " ".join(f"{k}={value(v)}" for k, v in overrides.items())


class Federation:
    """scripts/deploy.py with its own state, certificates, ports and FLWR_HOME."""

    def __init__(
        self,
        tmp: Path,
        free_ports: Callable[[int], list[int]],
        *,
        insecure: bool = False,
        isolation: str = "subprocess",
        node_poll: float = 0.0,
    ) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "FLWR_HOME": str(tmp / "flwr_home"),
            "BOUQUET_OUTPUT_ROOT": str(tmp),
            "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}",
        }
        self.free_ports = free_ports
        self.http, self.fleet = free_ports(1)[0], free_ports(1)[0]
        self.node_base = free_ports(8)[0]  # SuperNode i listens on node_base + i
        self.common = [
            "--state",
            str(tmp / "state"),
            "--certs",
            str(tmp / "certs"),
            "--port",
            str(self.http),
            "--fleet-address",
            f"127.0.0.1:{self.fleet}",
            "--node-port-base",
            str(self.node_base),
            "--isolation",
            isolation,
            *(["--insecure"] if insecure else []),
            *(["--node-poll-interval", str(node_poll)] if node_poll else []),
        ]
        self.connection = "deploy" if insecure else "deploy-tls"

    def deploy(self, *args: str, netns: str = "") -> subprocess.CompletedProcess[str]:
        """scripts/deploy.py with this federation's options (inside network namespace
        ``netns`` when given); ``args`` may repeat an option: the last one counts."""
        inside = ["ip", "netns", "exec", netns] if netns else []
        return subprocess.run(
            [*inside, PY, "scripts/deploy.py", *self.common, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def submit(
        self, run_config: str, timeout: float = 600, netns: str = ""
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(["ip", "netns", "exec", netns] if netns else []),
                PY,
                "scripts/simulate.py",
                "--connection",
                self.connection,
                "--run-config",
                run_config,
                "--timeout",
                str(timeout),
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )

    def flwr(self, *args: str) -> dict:
        """A flwr CLI command against this federation's SuperLink, its JSON answer."""
        return flwr_json(self.env, self.connection, *args)

    @contextlib.contextmanager
    def stopped_after(self) -> Iterator[Federation]:
        """On exit, `deploy.py down` and check that none of the processes it recorded
        outlives it and that the SuperLink's port is closed."""
        try:
            yield self
        finally:
            started = self.pids()
            down = self.deploy("down")
            assert down.returncode == 0, down.stderr
            _assert_gone(started)
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", self.http)) != 0  # no SuperLink outlives it

    def logs(self, pattern: str) -> str:
        """The tails of the logs of the processes named like ``pattern``, for a failure."""
        tails = [
            f"--- {f.name}\n{f.read_text(errors='replace')[-2000:]}"
            for f in sorted((self.tmp / "state" / "logs").glob(f"{pattern}.log"))
        ]
        return "\n".join(tails)

    def pids(self) -> dict[str, int]:
        out = {}
        for f in (self.tmp / "state" / "pids").glob("*.pid"):
            out[f.stem] = int(f.read_text())
        return out


@pytest.fixture
def tls_federation(tmp_path, free_ports):
    done = subprocess.run(
        [PY, "scripts/certs.py", "--out", str(tmp_path / "certs"), "--supernodes", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    fed = Federation(tmp_path, free_ports, node_poll=0.25)  # SuperNodes: fast_supernode.py
    with fed.stopped_after():
        up = fed.deploy("up", "--supernodes", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        yield fed


def _assert_gone(pids: dict[str, int]) -> None:
    assert pids, "no process was recorded"
    for name, pid in pids.items():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue  # gone
        assert state == "Z", f"{name} (PID {pid}) outlived `deploy.py down`"


def _supernode(fed: Federation, log: Path, *extra: str) -> tuple[int, str]:
    """A third SuperNode started by hand, expected to be refused (bounded retries); returns
    its exit code and output. Output goes to a file: the executor it spawns would otherwise
    hold a pipe open after the SuperNode itself has exited."""
    cmd = [
        "flower-supernode",
        "--superlink",
        f"127.0.0.1:{fed.fleet}",
        "--host",
        "127.0.0.1",
        "--port",
        str(fed.free_ports(1)[0]),
        "--node-config",
        "partition-id=2 num-partitions=3",
        "--max-retries",
        "2",
        "--max-wait-time",
        "15",
        *extra,
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=fed.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=90)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the SuperNode's executor, if still there
    return code, log.read_text()


def test_tls_federation_runs_and_rejects_strangers(tls_federation):
    fed = tls_federation
    certs = fed.tmp / "certs"
    # A key that was never registered is refused at activation.
    t0 = time.monotonic()
    code, output = _supernode(
        fed,
        fed.tmp / "stranger.log",
        "--root-certificates",
        str(certs / "ca.crt"),
        "--auth-supernode-private-key",
        str(certs / "supernode-2"),
    )
    assert code != 0
    assert "2004" in output, output[-2000:]  # "Failed to activate SuperNode"
    assert time.monotonic() - t0 < 60
    # A plaintext SuperNode cannot talk to the TLS SuperLink.
    code, output = _supernode(fed, fed.tmp / "plaintext.log", "--insecure")
    assert code != 0, output[-2000:]

    overrides = {**TINY, "method": "fedavg", "run-name": "deployed", "min-nodes": 2}
    done = fed.submit(_toml(overrides))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "finished:completed" in done.stdout
    summary = json.loads((fed.tmp / "outputs" / "deployed" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds-completed"] == 2
    assert summary["final-accuracy"] > 0.5
    # Both registered nodes answered every round (over gRPC, in separate processes), with
    # the results the same experiment gives in process.
    _assert_matches_in_process(fed, overrides)
    assert set(fed.pids()) == {"superlink", "supernode-0", "supernode-1", "worker-0", "worker-1"}
    # Each node's messages ran in its warm worker (client_app/worker.py), not per process.
    for i in (0, 1):
        log = (fed.tmp / "state" / "logs" / f"worker-{i}.log").read_text()
        assert log.count("[worker] train") == 2, log[-2000:]
    # The host's cores are divided between its SuperNodes (no oversubscription).
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert [_node_threads(fed, i) for i in (0, 1)] == [threads, threads]


@pytest.fixture
def plain_federation(tmp_path, free_ports):
    """Three insecure SuperNodes (the fault tests need no TLS; it is tested above)."""
    fed = Federation(tmp_path, free_ports, insecure=True)
    with fed.stopped_after():
        up = fed.deploy("up", "--supernodes", "3")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "WARNING: --insecure" in up.stderr  # never silently insecure
        yield fed


def _wait_for_round(fed: Federation, run_name: str, round_: int, timeout: float = 300) -> None:
    metrics = fed.tmp / "outputs" / run_name / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= round_:
            return
        time.sleep(0.5)
    raise AssertionError(f"round {round_} of {run_name} did not finish within {timeout:.0f} s")


def _submit_async(fed: Federation, run_config: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "scripts/simulate.py", "--connection", fed.connection, "--run-config", run_config],
        cwd=ROOT,
        env=fed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_supernode_killed_mid_run_leaves_the_run_to_finish(plain_federation):
    fed = plain_federation
    run = _submit_async(
        fed,
        'dataset="digits" num-server-rounds=3 local-steps=10 run-name="killed" '
        "min-nodes=2 round-timeout=20.0",
    )
    _wait_for_round(fed, "killed", 1)
    os.kill(fed.pids()["supernode-2"], signal.SIGKILL)  # no goodbye: the process just dies
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-4000:]
    rows = [json.loads(r) for r in (fed.tmp / "outputs" / "killed" / "metrics.jsonl").open()]
    assert [r["num-ok"] for r in rows] == [3, 2, 2]
    for r in rows[1:]:
        (reason,) = r["dropped"].values()  # the dead node, with why
        assert "no reply" in reason or "error reply" in reason
    # Restarted by hand, the node gets the torch threads `up` gave its peers.
    again = fed.deploy("supernode", "--index", "2", "--num-partitions", "3")
    assert again.returncode == 0, again.stdout + again.stderr
    threads = max(1, len(os.sched_getaffinity(0)) // 3)
    assert [_node_threads(fed, i) for i in range(3)] == [threads] * 3


def _serverapp_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"flwr-serverapp" in cmd:
                pids.append(int(proc.name))
    return pids


def test_resume_after_the_serverapp_is_killed(plain_federation):
    fed = plain_federation
    config = 'dataset="digits" num-server-rounds=3 local-steps=10 run-name="crashed" min-nodes=3'
    run = _submit_async(fed, config)
    _wait_for_round(fed, "crashed", 1)
    for pid in _serverapp_pids():
        os.kill(pid, signal.SIGKILL)  # the ServerApp dies mid-run
    out, _ = run.communicate(timeout=300)
    assert run.returncode != 0, out[-3000:]  # reported as failed, not as completed
    done = fed.submit(config + " resume=true")
    assert done.returncode == 0, done.stdout[-4000:]
    summary = json.loads((fed.tmp / "outputs" / "crashed" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds-completed"] == 3
    rows = [json.loads(r) for r in (fed.tmp / "outputs" / "crashed" / "metrics.jsonl").open()]
    assert [r["round"] for r in rows] == [1, 2, 3]  # round 1 was not repeated


def test_a_worker_killed_mid_run_leaves_its_node_answering(plain_federation):
    """SIGKILL a node's warm worker after round 1: its ClientApps run the messages themselves
    (and say so), every node answers every round."""
    fed = plain_federation
    run = _submit_async(
        fed, 'dataset="digits" num-server-rounds=3 local-steps=10 run-name="no-worker"'
    )
    _wait_for_round(fed, "no-worker", 1)
    os.kill(fed.pids()["worker-1"], signal.SIGKILL)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-4000:]
    rows = [json.loads(r) for r in (fed.tmp / "outputs" / "no-worker" / "metrics.jsonl").open()]
    assert [r["num-ok"] for r in rows] == [3, 3, 3]
    assert "running here instead" in fed.logs("supernode-1"), fed.logs("*")


def test_process_isolation_runs_the_docker_topology_natively(tmp_path, free_ports):
    """SuperLink and SuperNodes spawn no executor: separate long-running SuperExecs start the
    ServerApp and ClientApp processes, as the docker-compose services do."""
    fed = Federation(tmp_path, free_ports, insecure=True, isolation="process")
    with fed.stopped_after():
        # As in docker: no warm worker, every message in the ClientApp process it arrived in.
        up = fed.deploy("--no-warm-worker", "up", "--supernodes", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        assert set(fed.pids()) == {
            "superlink",
            "superexec-serverapp",
            "supernode-0",
            "supernode-1",
            "superexec-clientapp-0",
            "superexec-clientapp-1",
        }
        done = fed.submit('dataset="digits" num-server-rounds=2 local-steps=10 run-name="proc"')
        assert done.returncode == 0, done.stdout[-4000:]
        summary = json.loads((fed.tmp / "outputs" / "proc" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["final-accuracy"] > 0.5


def _rows(fed: Federation, run_name: str) -> list[dict]:
    with open(fed.tmp / "outputs" / run_name / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_superlink_restarted_with_its_database(tls_federation):
    """Registered nodes, their ids and finished runs survive a SuperLink restart; the nodes
    reconnect by themselves and the next run uses both."""
    fed = tls_federation
    first = fed.submit('dataset="digits" num-server-rounds=1 local-steps=5 run-name="before"')
    assert first.returncode == 0, first.stdout[-3000:]
    nodes = {n["node-id"] for n in fed.flwr("supernode", "ls")["nodes"]}
    assert len(nodes) == 2

    link = fed.pids()["superlink"]
    os.kill(link, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{link}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", fed.http)) != 0  # really down
    restarted = fed.deploy("superlink")  # same state directory: same database
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr

    runs = fed.flwr("ls")["runs"]
    assert [r["status"] for r in runs] == ["finished:completed"]  # the finished run survived
    assert {n["node-id"] for n in fed.flwr("supernode", "ls")["nodes"]} == nodes
    second = fed.submit('dataset="digits" num-server-rounds=2 local-steps=5 run-name="after"')
    assert second.returncode == 0, second.stdout[-3000:]
    assert [r["num-ok"] for r in _rows(fed, "after")] == [2, 2]  # both nodes came back
    logs = [(fed.tmp / "state" / "logs" / f"supernode-{i}.log").read_text() for i in (0, 1)]
    assert all("Connection successful" in log for log in logs)


def _online(fed: Federation) -> list[str]:
    return [n["node-id"] for n in fed.flwr("supernode", "ls")["nodes"] if n["status"] == "online"]


def test_malformed_replies_are_dropped_in_a_deployed_run(tmp_path, free_ports):
    """Two honest SuperNodes and two bad actors (NaN weights, a wrong shape), each started on
    its own as on separate hosts: the bad replies are dropped and logged by name, every round
    aggregates the honest two, and the model still learns."""
    fed = Federation(tmp_path, free_ports, insecure=True)
    with fed.stopped_after():
        assert fed.deploy("superlink").returncode == 0
        faults = ["", "", 'inject-fault="nan"', 'inject-fault="wrong-shape"']
        for i, fault in enumerate(faults):
            extra = ["--extra-config", fault] if fault else []
            node = fed.deploy("supernode", "--index", str(i), "--num-partitions", "4", *extra)
            assert node.returncode == 0, node.stdout + node.stderr
        deadline = time.monotonic() + 60
        while len(_online(fed)) < 4 and time.monotonic() < deadline:
            time.sleep(1.0)
        assert len(_online(fed)) == 4, fed.logs("supernode-*")
        done = fed.submit(
            'dataset="digits" num-server-rounds=2 local-steps=10 run-name="bad" min-nodes=2'
        )
        assert done.returncode == 0, done.stdout[-4000:]
        rows = _rows(fed, "bad")
        assert [(r["num-sampled"], r["num-ok"]) for r in rows] == [(4, 2), (4, 2)]
        for r in rows:
            reasons = list(r["dropped"].values())
            assert len(reasons) == 2, reasons
            assert any("holds NaN or Inf" in why for why in reasons), reasons
            assert any(", expected " in why for why in reasons), reasons  # the wrong shape
        summary = json.loads((fed.tmp / "outputs" / "bad" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["final-accuracy"] > 0.5
        assert "dropped train reply of node" in done.stdout  # the ServerApp logged it, with why


# ---------------------------------------------------------------- across network namespaces


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _netns_unavailable() -> str:
    """Why network namespaces cannot be used here ('' when they can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"bqprobe{os.getpid() % 10000}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as err:
        return f"`ip netns add` failed: {err.stderr.strip()}"
    _ip("netns", "del", probe)
    return ""


@pytest.fixture
def namespaces():
    """A SuperLink namespace and two SuperNode namespaces, each SuperNode joined to the
    SuperLink's by its own veth pair (10.231.i.1 <-> 10.231.i.2); nothing touches the host's
    own interfaces, and everything is deleted afterwards."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(f"multi-host test skipped: {reason}")
    tag = f"bq{os.getpid() % 10000:04d}"
    link, nodes = f"{tag}-link", [f"{tag}-n{i}" for i in range(2)]
    try:
        for ns in (link, *nodes):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i, ns in enumerate(nodes):
            a, b = f"{tag}l{i}", f"{tag}n{i}"
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            _ip("link", "set", a, "netns", link)
            _ip("link", "set", b, "netns", ns)
            _ip("-n", link, "addr", "add", f"10.231.{i}.1/30", "dev", a)
            _ip("-n", ns, "addr", "add", f"10.231.{i}.2/30", "dev", b)
            _ip("-n", link, "link", "set", a, "up")
            _ip("-n", ns, "link", "set", b, "up")
        yield link, nodes
    finally:
        for ns in (link, *nodes):  # deleting a namespace deletes its end of the veth
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_federation_across_network_namespaces_over_tls(namespaces, tmp_path, free_ports):
    """The SuperLink and each SuperNode in separate network namespaces (separate hosts as far
    as the network goes), over gRPC with TLS and node authentication."""
    link, nodes = namespaces
    sans = ["--san", "127.0.0.1", "--san", "10.231.0.1", "--san", "10.231.1.1"]
    certs = [PY, "scripts/certs.py", "--out", str(tmp_path / "certs"), "--supernodes", "2"]
    assert subprocess.run([*certs, *sans], cwd=ROOT, capture_output=True).returncode == 0
    fed = Federation(tmp_path, free_ports, node_poll=0.25)
    with fed.stopped_after():
        # The SuperLink listens on every interface of its namespace; the CLI reaches it on
        # that namespace's 127.0.0.1.
        up = fed.deploy("--fleet-address", "0.0.0.0:9092", "superlink", netns=link)
        assert up.returncode == 0, up.stdout + up.stderr
        keys = [str(tmp_path / "certs" / f"supernode-{i}.pub") for i in range(2)]
        reg = fed.deploy("--connection", "deploy-tls", "register", *keys, netns=link)
        assert reg.returncode == 0, reg.stdout + reg.stderr
        for i, ns in enumerate(nodes):  # each node reaches the SuperLink over its veth only
            node = fed.deploy(
                "--fleet-address",
                f"10.231.{i}.1:9092",
                *("supernode", "--index", str(i), "--num-partitions", "2"),
                netns=ns,
            )
            assert node.returncode == 0, node.stdout + node.stderr
        done = fed.submit(
            'dataset="digits" num-server-rounds=2 local-steps=10 run-name="netns"', netns=link
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert [r["num-ok"] for r in _rows(fed, "netns")] == [2, 2]
        summary = json.loads((tmp_path / "outputs" / "netns" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["final-accuracy"] > 0.5


# ---------------------------------------------------------------- same results as in process

# FedAvg is compared in the TLS test; then one method per other message flow:
# query.seed + train.h2l, and PRISM's coded masks.
CI_METHODS = ("fedh2l", "prism")
METHODS = {
    "fedavg": {},
    "fedprox": {"proximal-mu": 0.1},
    "feddf": {"public-fraction": 0.2, "distill-steps": 10, "models": "heterogeneous"},
    "fedh2l": {"models": "heterogeneous", "seed-per-class": 5},
    "fmd": {"teacher": "pixels", "probe-rounds": 3},
    "mosaic": {
        "mosaic-distill-round": 2,
        "generator-steps": 20,
        "generator-width": 8,
        "generator-aux-steps": 10,
        "meta-steps": 20,
        "mosaic-distill-steps": 10,
        "distill-steps": 10,
    },
    "prism": {
        "local-steps": 2,
        "batch-size": 16,
        "prism-eval-samples": 100,
        "prism-judge-steps": 100,
    },
}


@pytest.fixture(scope="module")
def parity_federation(tmp_path_factory, free_ports):
    tmp = tmp_path_factory.mktemp("parity")
    fed = Federation(tmp, free_ports, insecure=True, node_poll=0.25)
    with fed.stopped_after():
        up = fed.deploy("up", "--supernodes", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        yield fed


@pytest.mark.parametrize(
    "method",
    # CI checks one method per message flow; `pytest -m exhaustive` adds the rest (5 min).
    [m if m in CI_METHODS else pytest.param(m, marks=pytest.mark.exhaustive) for m in METHODS],
)
def test_every_method_gives_the_in_process_results_when_deployed(parity_federation, method):
    """The same experiment and seed through the in-process grid and through a gRPC deployment
    (separate SuperNode processes, a fresh ClientApp process per message) give the same
    metrics, round by round."""
    fed = parity_federation
    overrides = {**TINY, "method": method, **METHODS[method], "run-name": method}
    done = fed.submit(_toml(overrides))
    assert done.returncode == 0, done.stdout[-4000:]
    _assert_matches_in_process(fed, overrides)


def _node_threads(fed: Federation, index: int) -> int:
    """The OMP_NUM_THREADS deploy.py gave SuperNode ``index`` (0: none, torch's default)."""
    environ = Path(f"/proc/{fed.pids()[f'supernode-{index}']}/environ").read_bytes()
    for entry in environ.split(b"\0"):
        if entry.startswith(b"OMP_NUM_THREADS="):
            return int(entry.split(b"=", 1)[1])
    return 0


def _assert_matches_in_process(fed: Federation, overrides: dict) -> None:
    """The deployed run ``overrides["run-name"]`` has the metrics of the same experiment run
    through the in-process grid, round by round (timings aside). The in-process run uses the
    torch threads the SuperNodes were given: float sums depend on them."""
    import torch

    from client_app.app import app as client_app
    from server_app.config import DEFAULTS, load_config
    from server_app.local_grid import InProcessGrid
    from server_app.runner import run_experiment

    cfg = load_config({**DEFAULTS, **overrides, "output-dir": str(fed.tmp / "in-process")})
    n = int(overrides["num-partitions"])
    threads = torch.get_num_threads()
    torch.set_num_threads(_node_threads(fed, 0) or threads)
    try:
        nodes = [{"partition-id": i} for i in range(n)]
        local = run_experiment(InProcessGrid(client_app, nodes), cfg)
    finally:
        torch.set_num_threads(threads)
    assert local["status"] == "completed"
    with open(local["paths"]["metrics"]) as f:
        expected = [json.loads(line) for line in f]
    deployed = _rows(fed, overrides["run-name"])
    assert len(deployed) == len(expected) == overrides["num-server-rounds"]
    for got, want in zip(deployed, expected, strict=True):
        assert got["num-ok"] == want["num-ok"] == n
        assert got["dropped"] == want["dropped"] == {}
        for model, metrics in want["per-model"].items():
            assert got["per-model"][model] == pytest.approx(metrics, rel=1e-5, abs=1e-6), model
        measured = {k: v for k, v in want["train"].items() if "seconds" not in k}  # not timings
        assert {k: got["train"][k] for k in measured} == pytest.approx(measured, rel=1e-5, abs=1e-6)
