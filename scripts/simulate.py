"""Submit an experiment to a local Flower simulation (or a deployed SuperLink) and wait for
its real final status.

``flwr run`` exits 0 even when the run fails, so this submits with ``--format json``, polls
``flwr ls --run-id`` until the run finishes, prints the log on failure, and stops the managed
local SuperLink it started (by PID) so no server outlives the command. With ``--connection
NAME`` it submits to the SuperLink of that flwr CLI connection instead (one written by
``scripts/deploy.py``) and leaves it running.

    python scripts/simulate.py --num-supernodes 10 --run-config "num-server-rounds=5"
    python scripts/simulate.py --connection deploy-tls --run-config "num-server-rounds=5"

Exit codes: 0 completed, 1 failed, 2 timed out (the run is stopped).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def flwr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["flwr", *args], cwd=ROOT, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"flwr {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


def superlink_pids(port: str) -> list[int]:
    """PIDs of `flower-superlink` processes serving the local simulation port."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"flower-superlink" in c for c in cmd[:2]) and f"--port {port}" in " ".join(
            c.decode(errors="replace") for c in cmd
        ).replace("--port=", "--port "):
            pids.append(int(proc.name))
    return pids


def stop_superlink(port: str) -> None:
    for pid in superlink_pids(port):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-supernodes", type=int, default=10)
    parser.add_argument(
        "--client-cpus",
        type=float,
        default=0,
        help="CPUs Ray reserves per ClientApp (Flower's default 2); each actor runs torch with "
        "that many threads (client_app/threads.py), so cores / client-cpus run side by side",
    )
    parser.add_argument("--run-config", default="", help="TOML overrides, e.g. 'lr=0.1 seed=1'")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--keep-superlink", action="store_true")
    parser.add_argument(
        "--connection", default="", help="flwr CLI connection of a deployed SuperLink"
    )
    args = parser.parse_args()
    os.environ.setdefault("FLWR_HOME", str(ROOT / ".flwr_home"))
    for key, value in (
        ("FLWR_TELEMETRY_ENABLED", "0"),
        ("FLWR_DISABLE_UPDATE_CHECK", "1"),
        ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1"),
    ):
        os.environ[key] = value
    # flwr and the SuperLink it spawns live next to this interpreter (the project's venv).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    port = os.environ.setdefault("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091")
    conn = [args.connection] if args.connection else []
    run_args = ["run", ".", *conn, "--format", "json"]
    if not args.connection:
        federation = f"num-supernodes={args.num_supernodes}"
        if args.client_cpus:
            federation += f" client-resources-num-cpus={args.client_cpus:g}"
        run_args += ["--federation-config", federation]
    if args.run_config:
        run_args += ["--run-config", args.run_config]
    try:
        submitted = flwr(*run_args, check=False)
        try:
            run_id = str(json.loads(submitted.stdout)["run-id"])
        except (json.JSONDecodeError, KeyError):
            print(
                f"submission failed:\n{submitted.stdout}\n{submitted.stderr}",
                file=sys.stderr,
            )
            return 1
        where = args.connection or f"local simulation, {args.num_supernodes} SuperNodes"
        print(f"[simulate] run {run_id} submitted ({where})", flush=True)
        # `flwr log` streams the run's log until it ends; `flwr ls` is the source of truth.
        streamer = subprocess.Popen(["flwr", "log", run_id, *conn], cwd=ROOT)
        deadline = time.monotonic() + args.timeout
        status = ""
        try:
            while time.monotonic() < deadline:
                ls = json.loads(flwr("ls", *conn, "--run-id", run_id, "--format", "json").stdout)
                status = ls["runs"][0]["status"]
                if status.startswith("finished"):
                    break
                time.sleep(2.0)
            else:
                print(f"[simulate] run {run_id} timed out after {args.timeout:.0f} s; stopping it")
                flwr("stop", run_id, *conn, check=False)
                return 2
        finally:
            try:
                streamer.wait(timeout=15)
            except subprocess.TimeoutExpired:
                streamer.terminate()
        print(f"[simulate] run {run_id}: {status} {ls['runs'][0].get('status-details', '')}")
        return 0 if status == "finished:completed" else 1
    finally:
        if not args.keep_superlink and not args.connection:
            stop_superlink(port)


if __name__ == "__main__":
    sys.exit(main())
