"""``bouquet``: run an experiment, a grid of them, compare results, deploy, provision data.

    bouquet run configs/fedavg-fmnist-a0.5.yaml seed=1 num-server-rounds=3
    bouquet run --in-process configs/fedavg-fmnist-a0.5.yaml     # no Flower simulation engine
    bouquet run --from outputs/fedavg-fmnist-a0.5-cnn-small-seed0  # the same settings again
    bouquet grid grids/baselines.yaml --jobs 2                    # resumable; rerun to continue
    bouquet compare outputs/grids/baselines --gap-by method --reference fedavg
    bouquet deploy up --supernodes 3        # scripts/deploy.py
    bouquet data --require fmnist,digits    # python -m federated_data.provision

It sets Flower's environment itself (project-local FLWR_HOME, no telemetry, no runtime
dependency installation); no ``source`` step is needed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from . import compare
from .environment import project_root, set_flower_environment


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (``alpha=0.1`` is a float,
    ``method=fedavg`` a string, ``resume=true`` a bool)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"bouquet: {pair!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as err:
            raise SystemExit(f"bouquet: {pair!r}: unreadable value ({err})") from err
    return out


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's explicit settings: the experiment file (or a run's config.yaml), then the
    command line's key=value pairs."""
    settings: dict[str, Any] = {}
    if args.source:
        config = Path(args.source) / "config.yaml"
        if not config.is_file():
            raise SystemExit(f"bouquet: --from {args.source}: no config.yaml there")
        settings = yaml.safe_load(config.read_text())
        settings.pop("resume", None)
    elif args.experiment:
        path = Path(args.experiment).resolve()
        if not path.is_file():
            raise SystemExit(f"bouquet: experiment file {args.experiment} not found")
        settings["experiment"] = str(path)
    return {**settings, **parse_overrides(args.overrides)}


def cmd_run(args: argparse.Namespace, root: Path) -> int:
    from server_app.config import ConfigError, load_config

    settings = _settings(args)
    try:
        load_config(settings)  # fail here, with the key named, not in a SuperLink's log
    except ConfigError as err:
        raise SystemExit(f"bouquet: {err}") from err
    if args.in_process:
        from .grid import run_cell

        partitions = {"num-partitions": settings.get("num-partitions") or args.supernodes}
        summary = run_cell({**settings, **partitions}, str(settings.get("output-dir", "outputs")))
        return 0 if summary.get("status") == "completed" else 1
    run_config = " ".join(f"{k}={_toml(v)}" for k, v in settings.items())
    cmd = [sys.executable, str(root / "scripts" / "simulate.py"), "--run-config", run_config]
    cmd += ["--connection", args.connection] if args.connection else []
    cmd += ["--num-supernodes", str(args.supernodes)]
    return subprocess.call(cmd, cwd=root)


def cmd_grid(args: argparse.Namespace, root: Path) -> int:
    from .grid import GridError, load_grid, run_grid

    try:
        grid = load_grid(Path(args.grid), root)
    except GridError as err:
        raise SystemExit(f"bouquet: {err}") from err
    if args.list:
        from .grid import cell_status

        for cell in grid.cells:
            print(f"{cell_status(grid.run_dir(cell)):10s} {cell.name}")
        return 0
    results = run_grid(grid, jobs=args.jobs)
    failed = [
        c.name for c, r in results if not isinstance(r, dict) or r.get("status") != "completed"
    ]
    if failed:
        print(f"[grid] {len(failed)} cells failed: {', '.join(failed)}; rerun to retry them")
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace, root: Path) -> int:
    try:
        runs = compare.find_runs([Path(p) for p in args.runs])
    except ValueError as err:
        raise SystemExit(f"bouquet: {err}") from err
    cells = compare.group(runs)
    failed = [r for r in runs if r.summary.get("status") != "completed"]
    for run in failed:
        print(f"(not counted: {run.path} {run.summary.get('status')})")
    if not cells:
        raise SystemExit("bouquet: no completed run to compare")
    text = compare.table(cells, args.last_k)
    if args.gap_by:
        reference = yaml.safe_load(args.reference) if args.reference is not None else None
        if reference is None:
            reference = cells[0].settings.get(args.gap_by)
        gaps = compare.paired_gaps(cells, args.gap_by, reference, args.statistic)
        keys = [k for k in compare.varying(cells) if k != args.gap_by]
        text += "\n" + compare.gap_table(gaps, keys, args.gap_by, reference)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(text)
        compare.plot(cells, out / "compare.png")
        print(f"[compare] {out / 'compare.md'}, {out / 'compare.png'}")
    return 0


def cmd_passthrough(args: argparse.Namespace, root: Path) -> int:
    if args.command == "deploy":
        cmd = [sys.executable, str(root / "scripts" / "deploy.py"), *args.rest]
    else:
        cmd = [sys.executable, "-m", "federated_data.provision", *args.rest]
    return subprocess.call(cmd, cwd=root)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bouquet", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one experiment (local simulation, a SuperLink, in process)")
    run.add_argument("experiment", nargs="?", help="an experiment YAML file (configs/*.yaml)")
    run.add_argument("overrides", nargs="*", help="key=value settings, over the file's")
    run.add_argument("--from", dest="source", help="a run directory: rerun its settings")
    run.add_argument("--supernodes", type=int, default=10, help="simulated SuperNodes")
    run.add_argument("--connection", help="a flwr CLI connection (scripts/deploy.py writes one)")
    run.add_argument("--in-process", action="store_true", help="no simulation engine (fast)")
    grid = sub.add_parser("grid", help="a sweep over settings and seeds, resumable")
    grid.add_argument("grid", help="a grid YAML file (grids/*.yaml)")
    grid.add_argument("--jobs", type=int, default=1, help="cells run in parallel")
    grid.add_argument("--list", action="store_true", help="only list the cells and their status")
    cmp = sub.add_parser("compare", help="mean ± std over seeds, gaps, plots")
    cmp.add_argument("runs", nargs="+", help="run directories, or folders that hold them")
    cmp.add_argument("--last-k", type=int, default=3, help="rounds averaged in last-k")
    cmp.add_argument("--gap-by", help="a setting (e.g. method): gaps to its reference value")
    cmp.add_argument("--reference", help="the reference value of --gap-by (default: first)")
    cmp.add_argument("--statistic", choices=("final", "best", "last-k"), default="final")
    cmp.add_argument("--out", help="write compare.md and compare.png here")
    for name, what in zip(
        PASSTHROUGH, ("scripts/deploy.py", "federated_data.provision"), strict=True
    ):
        extra = sub.add_parser(name, help=f"{what}, with its own arguments", add_help=False)
        extra.add_argument("rest", nargs=argparse.REMAINDER)
    return p


COMMANDS = {
    "run": cmd_run,
    "grid": cmd_grid,
    "compare": cmd_compare,
    "deploy": cmd_passthrough,
    "data": cmd_passthrough,
}


PASSTHROUGH = ("deploy", "data")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        # Every later argument is the script's own, options first included (`bouquet deploy
        # --insecure up`, `bouquet deploy --help`): argparse's REMAINDER refuses a leading one.
        root = project_root()
        set_flower_environment(root)
        return cmd_passthrough(argparse.Namespace(command=argv[0], rest=argv[1:]), root)
    args = parser().parse_args(argv)
    if args.command == "run" and args.experiment and "=" in args.experiment:
        args.overrides.insert(0, args.experiment)  # `bouquet run seed=1`: no file, only pairs
        args.experiment = None
    if args.command == "run" and args.source and args.experiment:
        raise SystemExit("bouquet: give an experiment file or --from RUN_DIR, not both")
    root = project_root()
    set_flower_environment(root)
    return COMMANDS[args.command](args, root)


if __name__ == "__main__":
    sys.exit(main())
