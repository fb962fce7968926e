"""Start, register, inspect and stop a deployed bouquet federation (Flower 1.39, gRPC Fleet API).

One SuperLink and N SuperNodes run as separate processes, on this host (``up``) or one per host
(``superlink`` on the server, ``supernode`` on each device). Every process writes its log to
``<state>/logs/<name>.log`` and its PID to ``<state>/pids/<name>.pid``; ``down`` stops them by
PID (SIGTERM, then SIGKILL after ``--stop-timeout``). The SuperLink keeps its state in
``<state>/superlink.db`` (``--database``), so registered nodes, node ids and finished runs
survive a restart; runtime dependency installation is always off.

TLS and SuperNode authentication are the default and need the files of ``scripts/certs.py``;
``--insecure`` runs without them and says so loudly.

    python scripts/certs.py --supernodes 3                      # once
    python scripts/deploy.py up --supernodes 3                  # TLS + auth, subprocess isolation
    python scripts/simulate.py --connection deploy-tls --run-config "num-server-rounds=3"
    python scripts/deploy.py down

``--isolation process`` reproduces the docker topology natively: the SuperLink and every
SuperNode get a separate long-running ``flower-superexec`` that starts the ServerApp and
ClientApp processes. Beside every SuperNode runs a warm worker (client_app/worker.py) that
runs the node's messages in one long-lived process, so torch, the data and the model code load
once per node instead of once per message; ``--no-warm-worker`` turns it off, and a missing or
crashed worker only makes the messages run in Flower's ClientApp process again. The host's
cores are divided among the SuperNodes one state directory runs (torch threads: ``up`` and a
later ``supernode`` alike, so a restarted node matches its peers); ``--node-poll-interval``
caps an idle SuperNode's 3 s poll (scripts/fast_supernode.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ when imported by a test
import certs

from client_app.threads import threads_per_worker

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # flwr's executables live next to this interpreter
INSECURE_WARNING = (
    "WARNING: --insecure: traffic between SuperLink and SuperNodes is NOT encrypted and ANY "
    "SuperNode can join. Use it only on a trusted, isolated network."
)


@dataclass(frozen=True)
class Layout:
    """Where a federation's files live and how its processes reach each other."""

    state: Path
    certs: Path
    insecure: bool
    isolation: str
    fleet: str  # the SuperLink's gRPC Fleet API address, host:port
    host: str  # the SuperLink's HTTP (Control + Runtime) API host
    port: int
    node_poll: float = 0.0  # > 0: SuperNodes through scripts/fast_supernode.py
    warm_worker: bool = True  # a client_app.worker process beside every SuperNode

    @property
    def http(self) -> str:
        return f"{self.host}:{self.port}"

    def tls_files(self) -> dict[str, Path]:
        files = {
            "ca": self.certs / "ca.crt",
            "cert": self.certs / "server.pem",
            "key": self.certs / "server.key",
        }
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise SystemExit(
                f"TLS files missing: {', '.join(missing)}; create them with "
                f"`python scripts/certs.py --out {self.certs}` (or pass --insecure explicitly)"
            )
        host = self.fleet.rsplit(":", 1)[0].strip("[]")
        problems = certs.check(files["ca"], files["cert"], files["key"], host)
        if problems:
            raise SystemExit(
                "TLS files unusable: "
                + "; ".join(problems)
                + f". Regenerate them with `python scripts/certs.py --out {self.certs} --force "
                f"--san {host} ...` (then register the SuperNodes' keys again)"
            )
        return files


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("FLWR_HOME", str(ROOT / ".flwr_home"))
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    # The SuperExecs (spawned by SuperLink and SuperNodes, or started by `up --isolation
    # process`) look for new tasks every 0.1 s instead of every 1 s: less latency per message.
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    return env


# ------------------------------------------------------------------ commands of each process


def superlink_command(lay: Layout) -> list[str]:
    cmd = [
        "flower-superlink",
        "--fleet-api-address",
        lay.fleet,
        "--host",
        lay.host,
        "--port",
        str(lay.port),
        "--database",
        str(lay.state / "superlink.db"),
        "--isolation",
        lay.isolation,
        "--disable-runtime-dependency-installation",
    ]
    if lay.insecure:
        return [*cmd, "--insecure"]
    tls = lay.tls_files()
    return [
        *cmd,
        "--ssl-ca-certfile",
        str(tls["ca"]),
        "--ssl-certfile",
        str(tls["cert"]),
        "--ssl-keyfile",
        str(tls["key"]),
        "--enable-supernode-auth",
    ]


def supernode_command(
    lay: Layout,
    index: int,
    *,
    node_config: str,
    port: int,
    key: Path | None,
    max_retries: int | None = None,
) -> list[str]:
    launcher = ["flower-supernode"]
    if lay.node_poll > 0:  # the same SuperNode with its idle poll capped
        fast = ROOT / "scripts" / "fast_supernode.py"
        launcher = [sys.executable, str(fast), "--poll-interval", str(lay.node_poll)]
    cmd = [
        *launcher,
        "--superlink",
        lay.fleet,
        "--host",
        "127.0.0.1",  # its Runtime API serves only its own ClientApp executor
        "--port",
        str(port),
        "--node-config",
        node_config,
        "--isolation",
        lay.isolation,
    ]
    if max_retries is not None:
        cmd += ["--max-retries", str(max_retries), "--max-wait-time", "30"]
    if lay.insecure:
        return [*cmd, "--insecure"]
    key = key or lay.certs / f"supernode-{index}"
    if not key.is_file():
        raise SystemExit(f"SuperNode key {key} missing; create it with scripts/certs.py")
    return [
        *cmd,
        "--root-certificates",
        str(lay.tls_files()["ca"]),
        "--auth-supernode-private-key",
        str(key),
    ]


def superexec_command(lay: Layout, runtime_address: str, *, for_superlink: bool) -> list[str]:
    cmd = ["flower-superexec", "--runtime-api-address", runtime_address]
    if for_superlink and not lay.insecure:
        return [*cmd, "--root-certificates", str(lay.tls_files()["ca"])]
    # A SuperNode's Runtime API listens on 127.0.0.1 for its own executor only.
    return [*cmd, "--insecure"]


# ------------------------------------------------------------------ processes


def start(lay: Layout, name: str, cmd: list[str], threads: int = 0) -> int:
    """Start ``cmd`` detached, log to <state>/logs/<name>.log, record its PID; ``threads`` > 0
    caps the torch/OpenMP threads of it and of the processes it starts."""
    pid_file = lay.state / "pids" / f"{name}.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        raise SystemExit(f"{name} is already running (PID {pid_file.read_text().strip()})")
    (lay.state / "logs").mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log = open(lay.state / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**environment(), **thread_caps(threads)},
        cwd=ROOT,
        start_new_session=True,
    )
    pid_file.write_text(str(proc.pid))
    print(f"[deploy] {name}: PID {proc.pid}: {' '.join(cmd)}", flush=True)
    return proc.pid


def stop(lay: Layout, name: str, timeout: float) -> None:
    pid_file = lay.state / "pids" / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    if _alive(pid):
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):  # e.g. a SuperLink waiting for a streaming CLI client
            _signal_group(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    print(f"[deploy] {name}: stopped", flush=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # the process and the executors it spawned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def running(lay: Layout) -> dict[str, int]:
    out = {}
    for pid_file in sorted((lay.state / "pids").glob("*.pid")):
        pid = int(pid_file.read_text())
        if _alive(pid):
            out[pid_file.stem] = pid
    return out


def wait_healthy(lay: Layout, timeout: float = 60.0) -> None:
    """Poll the SuperLink's /health until it answers 200 (HTTPS with the CA under TLS)."""
    scheme = "http" if lay.insecure else "https"
    context = None if lay.insecure else ssl.create_default_context(cafile=lay.tls_files()["ca"])
    host = "127.0.0.1" if lay.host in ("0.0.0.0", "") else lay.host
    url = f"{scheme}://{host}:{lay.port}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the SuperLink did not answer {url} within {timeout:.0f} s (see its log)")


# ------------------------------------------------------------------ flwr CLI connection


def write_connection(lay: Layout, name: str) -> Path:
    """Add (or replace) ``[superlink.<name>]`` in $FLWR_HOME/config.toml for this SuperLink."""
    home = Path(environment()["FLWR_HOME"])
    path = home / "config.toml"
    host = "127.0.0.1" if lay.host in ("0.0.0.0", "") else lay.host
    lines = [f"[superlink.{name}]", f'address = "{host}:{lay.port}"']
    if lay.insecure:
        lines.append("insecure = true")
    else:
        lines.append(f'root-certificates = "{lay.tls_files()["ca"]}"')
    text = (
        path.read_text()
        if path.exists()
        else '[superlink]\ndefault = "local"\n\n' + ('[superlink.local]\naddress = ":local:"\n')
    )
    kept, skipping = [], False
    for line in text.splitlines():
        if line.startswith("[superlink."):
            skipping = line.strip() == f"[superlink.{name}]"
        if not skipping:
            kept.append(line)
    home.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(kept).rstrip() + "\n\n" + "\n".join(lines) + "\n")
    return path


def register(lay: Layout, connection: str, public_key: Path) -> int:
    """Register a SuperNode public key; returns the node id the SuperLink assigned."""
    done = subprocess.run(
        ["flwr", "supernode", "register", str(public_key), connection, "--format", "json"],
        capture_output=True,
        text=True,
        env=environment(),
        cwd=ROOT,
    )
    try:
        reply = json.loads(done.stdout)
    except json.JSONDecodeError:
        reply = {}
    if not reply.get("success"):
        raise SystemExit(f"registering {public_key} failed:\n{done.stdout}\n{done.stderr}")
    print(f"[deploy] registered {public_key.name}: node id {reply['node-id']}", flush=True)
    return int(reply["node-id"])


# ------------------------------------------------------------------ subcommands


def cmd_superlink(args: argparse.Namespace, lay: Layout) -> str:
    """The SuperLink (+ its ServerApp executor in process isolation) and the CLI connection;
    returns the connection name."""
    start(lay, "superlink", superlink_command(lay))
    try:
        wait_healthy(lay)
    except SystemExit:
        stop(lay, "superlink", timeout=10.0)  # a failed start leaves nothing running
        raise
    connection = args.connection or ("deploy" if lay.insecure else "deploy-tls")
    print(f"[deploy] connection '{connection}' in {write_connection(lay, connection)}")
    if lay.isolation == "process":
        start(lay, "superexec-serverapp", superexec_command(lay, lay.http, for_superlink=True))
    return connection


def threads_per_node(requested: int, supernodes: int) -> int:
    """The thread policy of a host's SuperNodes (client_app/threads.py): ``requested`` when
    > 0, else this host's cores divided among the SuperNodes it runs."""
    return threads_per_worker(requested, supernodes)


def thread_caps(threads: int) -> dict[str, str]:
    """Environment capping torch's intra-op (OpenMP/MKL) threads; {} leaves torch's default
    (one thread per core)."""
    if threads <= 0:
        return {}
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def worker_socket(lay: Layout, index: int) -> Path:
    """Where SuperNode ``index``'s warm worker listens: under the state directory, or under
    the temporary directory when that path is too long for a Unix socket (108 bytes)."""
    path = lay.state / "workers" / f"supernode-{index}.sock"
    if len(str(path)) < 100:
        return path
    tag = hashlib.sha256(str(lay.state).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"bouquet-{os.getuid()}-{tag}-{index}.sock"


def _start_worker(lay: Layout, index: int, threads: int) -> str:
    """Start SuperNode ``index``'s warm worker (client_app/worker.py) unless it runs; return
    the node-config entry that points the node's ClientApps at it."""
    sock = worker_socket(lay, index)
    name = f"worker-{index}"
    if name not in running(lay):
        start(
            lay, name, [sys.executable, "-m", "client_app.worker", "--socket", str(sock)], threads
        )
    return f' worker="{sock}"'


def _start_node(
    lay: Layout,
    index: int,
    node_config: str,
    port_base: int,
    key: Path | None = None,
    threads: int = 0,
) -> None:
    """SuperNode ``index`` (+ its warm worker, + its ClientApp executor in process
    isolation). Its run state goes to the state directory's ``node-state`` (unless the node
    config names a ``state-dir``): a restarted node or a resumed run continues its clients."""
    port = port_base + index
    if "state-dir=" not in node_config:
        node_config += f' state-dir="{lay.state / "node-state"}"'
    if lay.warm_worker:
        node_config += _start_worker(lay, index, threads)
    cmd = supernode_command(lay, index, node_config=node_config, port=port, key=key)
    start(lay, f"supernode-{index}", cmd, threads)
    if lay.isolation == "process":
        executor = superexec_command(lay, f"127.0.0.1:{port}", for_superlink=False)
        start(lay, f"superexec-clientapp-{index}", executor, threads)


def cmd_up(args: argparse.Namespace, lay: Layout) -> None:
    connection = cmd_superlink(args, lay)
    # N SuperNodes share this host's cores: each ClientApp with torch's default of one thread
    # per core oversubscribes them, and OpenMP's spinning threads then run several times
    # slower (measured: 6.6x for 2 nodes on 2 cores, docs/benchmarks.md "Deployment overhead").
    threads = threads_per_node(args.threads_per_node, args.supernodes)
    print(f"[deploy] {threads} torch thread(s) per SuperNode", flush=True)
    for i in range(args.supernodes):
        if not lay.insecure:
            register(lay, connection, lay.certs / f"supernode-{i}.pub")
        node_config = f"partition-id={i} num-partitions={args.supernodes}"
        _start_node(lay, i, node_config, args.node_port_base, threads=threads)
    print(f"[deploy] up: submit with `python scripts/simulate.py --connection {connection}`")


def cmd_supernode(args: argparse.Namespace, lay: Layout) -> None:
    if args.dataset_path:
        path = Path(args.dataset_path).resolve()
        node_config = f'partition-id={args.index} dataset-path="{path}"'
    else:
        node_config = f"partition-id={args.index} num-partitions={args.num_partitions}"
    if args.device:
        node_config += f' device="{args.device}"'
    if args.extra_config:
        node_config += f" {args.extra_config}"
    key = Path(args.key) if args.key else None
    # The SuperNodes this state directory already runs on this host, plus this one: a node
    # restarted next to its peers gets the threads `up` gave them (same results), a node
    # alone on its device gets every core.
    name = f"supernode-{args.index}"
    others = {n for n in running(lay) if n.startswith("supernode-")} - {name}
    threads = threads_per_node(args.threads_per_node, len(others) + 1)
    print(f"[deploy] {threads} torch thread(s) for {name}", flush=True)
    log_file = lay.state / "logs" / f"{name}.log"
    offset, outcome = join(lay, args, node_config, key, threads)
    if outcome == "connecting":
        print(
            f"[deploy] {name}: not joined after {args.activation_wait:.0f} s; it keeps "
            f"retrying (log: {log_file})",
            flush=True,
        )
    elif outcome != "active":
        tail = log_file.read_bytes()[offset:].decode(errors="replace")[-2000:]
        raise SystemExit(f"{name} exited before it joined the federation:\n{tail}")


def join(
    lay: Layout, args: argparse.Namespace, node_config: str, key: Path | None, threads: int
) -> tuple[int, str]:
    """Start SuperNode ``args.index`` and wait until it joins (see :func:`wait_activated`),
    starting it again while the SuperLink still holds its key; returns the log offset of the
    last attempt and its outcome."""
    name = f"supernode-{args.index}"
    deadline = time.monotonic() + args.activation_wait
    while True:
        offset = _log_size(lay, name)
        _start_node(lay, args.index, node_config, args.node_port_base, key, threads)
        outcome = wait_activated(lay, name, offset, deadline)
        if outcome != IDENTITY_HELD or time.monotonic() + 5 > deadline:
            return offset, outcome
        # A crashed authenticated node's identity stays active on the SuperLink until its
        # heartbeat expires (Flower: 2 x 30 s); until then its key is refused (code 2004).
        print(
            f"[deploy] {name}: the SuperLink still holds this key's node (a crashed "
            "instance, until its heartbeat expires); retrying in 5 s",
            flush=True,
        )
        time.sleep(5)


IDENTITY_HELD = "identity-held"


def _log_size(lay: Layout, name: str) -> int:
    path = lay.state / "logs" / f"{name}.log"
    return path.stat().st_size if path.exists() else 0


def wait_activated(lay: Layout, name: str, offset: int, deadline: float) -> str:
    """How a just-started SuperNode fares, read from its log past ``offset``: ``active`` (it
    has a node id), ``identity-held`` (activation refused, code 2004), ``exited`` (anything
    else), or ``connecting`` when ``deadline`` passes first (no SuperLink yet: it retries)."""
    log_file = lay.state / "logs" / f"{name}.log"
    pid = int((lay.state / "pids" / f"{name}.pid").read_text())
    while True:
        text = log_file.read_bytes()[offset:].decode(errors="replace")
        if "SuperNode ID:" in text:
            return "active"
        if not _alive(pid):
            return IDENTITY_HELD if "[code: 2004]" in text else "exited"
        if time.monotonic() > deadline:
            return "connecting"
        time.sleep(0.2)


def cmd_connection(args: argparse.Namespace, lay: Layout) -> None:
    """Only write the CLI connection (a SuperLink started by docker compose or elsewhere)."""
    if not args.connection:
        raise SystemExit("connection needs --connection NAME")
    print(f"[deploy] connection '{args.connection}' in {write_connection(lay, args.connection)}")


def cmd_register(args: argparse.Namespace, lay: Layout) -> None:
    for key in args.public_keys:
        register(lay, args.connection, Path(key))


def cmd_down(args: argparse.Namespace, lay: Layout) -> None:
    names = sorted(
        running(lay), key=lambda n: (n == "superlink", n.startswith("superexec-server"), n)
    )
    for name in names:  # nodes and executors first, the SuperLink last
        stop(lay, name, args.stop_timeout)
    for pid_file in (lay.state / "pids").glob("*.pid"):
        pid_file.unlink(missing_ok=True)  # stale entries of processes already gone


def cmd_status(args: argparse.Namespace, lay: Layout) -> None:
    procs = running(lay)
    if not procs:
        print("[deploy] nothing running")
    for name, pid in procs.items():
        print(f"{name:28s} PID {pid}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state", type=Path, default=ROOT / "deploy" / "state")
    p.add_argument("--certs", type=Path, default=ROOT / "deploy" / "certs")
    p.add_argument("--insecure", action="store_true", help="no TLS, no node authentication")
    p.add_argument("--isolation", choices=("subprocess", "process"), default="subprocess")
    p.add_argument("--fleet-address", default="127.0.0.1:9092", help="SuperLink gRPC Fleet API")
    p.add_argument("--host", default="127.0.0.1", help="SuperLink HTTP API host (0.0.0.0 on a LAN)")
    p.add_argument("--port", type=int, default=8000, help="SuperLink HTTP API port")
    p.add_argument("--node-port-base", type=int, default=9094, help="SuperNode i uses base + i")
    p.add_argument("--connection", default="", help="flwr CLI connection name to write/use")
    p.add_argument("--stop-timeout", type=float, default=15.0)
    p.add_argument(
        "--threads-per-node",
        type=int,
        default=0,
        help="torch threads of each SuperNode's ClientApps (0: this host's cores divided "
        "among the SuperNodes this state directory runs, the new one included)",
    )
    p.add_argument(
        "--node-poll-interval",
        type=float,
        default=0.0,
        help="cap an idle SuperNode's poll (Flower: 3 s) at this many seconds, e.g. 0.25; "
        "0 keeps Flower's (scripts/fast_supernode.py)",
    )
    p.add_argument(
        "--no-warm-worker",
        dest="warm_worker",
        action="store_false",
        help="run every message in Flower's fresh ClientApp process (no client_app.worker "
        "beside each SuperNode: each message then pays torch's import and the data loading)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="SuperLink + N SuperNodes on this host")
    up.add_argument("--supernodes", type=int, default=2)
    sub.add_parser("superlink", help="only the SuperLink (the server host)")
    node = sub.add_parser("supernode", help="one SuperNode (a device)")
    node.add_argument("--index", type=int, required=True, help="partition id and key index")
    node.add_argument("--num-partitions", type=int, default=0)
    node.add_argument("--dataset-path", default="", help="pre-partitioned .npz on this device")
    node.add_argument("--key", default="", help="private key (default <certs>/supernode-<index>)")
    node.add_argument("--device", default="", help="torch device for this node, e.g. cuda")
    node.add_argument(
        "--activation-wait",
        type=float,
        default=90.0,
        help="seconds to wait for the node to join (retrying while the SuperLink still holds "
        "the key of a crashed instance); a node still connecting after that keeps retrying",
    )
    node.add_argument(
        "--extra-config",
        default="",
        help="more node-config entries, e.g. 'architecture=\"mlp\"' (a lighter model)",
    )
    reg = sub.add_parser("register", help="register SuperNode public keys")
    reg.add_argument("public_keys", nargs="+")
    sub.add_parser("connection", help="write the flwr CLI connection for --host/--port")
    sub.add_parser("down", help="stop every process started from this state directory")
    sub.add_parser("status", help="list the running processes")
    args = p.parse_args(argv)
    if args.command == "supernode" and not args.dataset_path and args.num_partitions <= 0:
        p.error("supernode needs --num-partitions N or --dataset-path FILE")
    if args.command == "register" and not args.connection:
        p.error("register needs --connection (the name written by `up`/`superlink`)")
    lay = Layout(
        state=args.state.resolve(),
        certs=args.certs.resolve(),
        insecure=args.insecure,
        isolation=args.isolation,
        fleet=args.fleet_address,
        host=args.host,
        port=args.port,
        node_poll=args.node_poll_interval,
        warm_worker=args.warm_worker,
    )
    if args.insecure and args.command in ("up", "superlink", "supernode"):
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
    commands = {
        "up": cmd_up,
        "superlink": cmd_superlink,
        "supernode": cmd_supernode,
        "register": cmd_register,
        "connection": cmd_connection,
        "down": cmd_down,
        "status": cmd_status,
    }
    commands[args.command](args, lay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
