"""FMD table: foundation-model distillation vs FedAvg and FedProx, 10 clients.

Partitions: Dirichlet alpha in {0.01, 0.05, 0.1, 0.5, 1.0} and 1 and 2 classes per client
(pathological). Rows: FMD (EfficientNet-Lite0 from the PyPI wheel at 64x64 px, frozen, with a
linear-probe head trained by FedAvg on the clients' cached features, then students distilled
with (1 - mu) CE + mu T^2 KL), FedAvg and FedProx over the same students (cnn-small), the
teacher itself (backbone + that federated probe) and a centrally trained probe (the head fitted
on every training image's features: the reference the federated probe is chasing). "FMD
(weighted)" is FMD with ``kd-weighting=class-accuracy``: each student scales kd-mu per example
by the teacher's accuracy on its own examples of that class (issue 21's "a teacher that knows
when it helps"). "FMD (lda probe)" is FMD with ``probe=lda``: the head solved from the sum of
the clients' class statistics (exact under any skew) and temperature-scaled on their summed
losses, instead of 30 FedAvg rounds of the probe. Every method uses the same seeds, rounds, local
steps and learning rate; the dataset's test set scores every model (mean, worst-class
accuracy). ``--dataset mnist10k`` runs the same table on MNIST-10k (results/fmd-mnist10k.*).

The teacher's features are computed once per training image and cached on disk (fp16, keyed by
sample index); the time that takes is measured separately (``precompute``), so the round times
of the table do not include it. To time it on a cold cache, point the data directory at a copy
without ``cache/teachers`` and run ``--precompute-only`` (writes results/fmd-precompute.json).

    python -m benchmarks.fmd --seeds 0,1,2 --resume                    # Fashion-MNIST
    python -m benchmarks.fmd --dataset mnist10k --seeds 0,1,2 --resume  # MNIST-10k

Results are saved after every run; ``--resume`` keeps the runs of a saved table made with the
same settings and runs only the missing (partition, method, seed) triples.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.harness import OUT, run_in_process
from federated_data import DataSpec, Federation
from models.teacher_cache import teacher_features
from models.teachers import EfficientNetTeacher, head_logits, train_head
from models.training import score_logits
from models.zoo import build_model, count_flops, count_parameters

PARTITIONS: dict[str, dict[str, Any]] = {
    **{
        f"dirichlet a={a}": {"partitioner": "dirichlet", "alpha": a}
        for a in (0.01, 0.05, 0.1, 0.5, 1.0)
    },
    "1 class/client": {"partitioner": "pathological", "classes-per-client": 1},
    "2 classes/client": {"partitioner": "pathological", "classes-per-client": 2},
}
# The cells the target is about get more seeds.
HEADLINE = ("dirichlet a=0.01", "1 class/client")
METHODS = {
    "FMD": {"method": "fmd", "probe": "federated"},
    "FMD (weighted)": {"method": "fmd", "probe": "federated", "kd-weighting": "class-accuracy"},
    "FMD (lda probe)": {"method": "fmd", "probe": "lda"},
    "FedAvg": {"method": "fedavg"},
    "FedProx": {"method": "fedprox"},
}
DATA = {
    "fmnist": "Fashion-MNIST (Debian dataset-fashion-mnist), 60,000 training images "
    "partitioned over the clients, official 10,000-image test set",
    "mnist10k": "MNIST-10k (the first 10,000 MNIST training images), 9,000 partitioned over "
    "the clients, a class-balanced 1,000-image hold-out as test set",
}
# Settings a resumed table must share with the saved one (the seeds and partitions may grow).
SAME = (
    "dataset",
    "rounds",
    "local_steps",
    "lr",
    "clients",
    "image_size",
    "probe_rounds",
    "probe_local_steps",
    "probe_lr",
    "kd_mu",
    "kd_temperature",
)


def precompute(dataset: str, image_size: int) -> dict[str, Any]:
    """Featurise the dataset's training and test images into the cache; time it.

    Also times 2,048 images into an empty temporary cache, so the per-image cost is reported
    even when the real cache was already warm.
    """
    fed = Federation(DataSpec(dataset=dataset))
    teacher = EfficientNetTeacher(fed.num_classes, image_size=image_size)
    cache = fed.cache_dir / "teachers"
    out: dict[str, Any] = {"image-size": image_size, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        x = fed.source.x_train[:2048]
        t0 = time.perf_counter()
        teacher_features(teacher, x, np.arange(len(x)), fed.data_key("train"), Path(tmp))
        out["ms-per-image"] = round(1000 * (time.perf_counter() - t0) / len(x), 2)
    for split, x in (("train", fed.source.x_train), ("test", fed.test.x)):
        t0 = time.perf_counter()
        _, computed = teacher_features(teacher, x, np.arange(len(x)), fed.data_key(split), cache)
        out[f"{split}-images"] = len(x)
        out[f"{split}-computed-now"] = computed
        out[f"{split}-seconds-now"] = round(time.perf_counter() - t0, 1)
    out["teacher-cost"] = teacher.cost(fed.input_shape)
    return out


def central_probe(args: argparse.Namespace) -> dict[str, float]:
    """The head fitted on every training image's cached features, scored on the test set."""
    fed = Federation(DataSpec(dataset=args.dataset))
    teacher = EfficientNetTeacher(fed.num_classes, image_size=args.image_size)
    cache = fed.cache_dir / "teachers"
    xtr, ytr = fed.source.x_train, fed.source.y_train
    ftr, _ = teacher_features(teacher, xtr, np.arange(len(xtr)), fed.data_key("train"), cache)
    fte, _ = teacher_features(
        teacher, fed.test.x, np.arange(len(fed.test)), fed.data_key("test"), cache
    )
    head, _ = train_head(
        teacher.initial_head(),
        ftr,
        ytr,
        steps=args.probe_rounds * args.probe_local_steps,
        lr=args.probe_lr,
    )
    return score_logits(head_logits(torch.from_numpy(fte), head), fed.test.y)


def run_name(name: str, partition: str, method: str, seed: int) -> str:
    slug = method.replace(" (", "-").replace(")", "").replace(" ", "")
    return f"{name}-bench-{slug}-{partition.replace(' ', '').replace('/', '')}-s{seed}"


def cell_settings(partition: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of one cell but the seed (configs/fmd-*.yaml hold the same)."""
    return {
        **PARTITIONS[partition],
        **METHODS[method],
        "num-server-rounds": args.rounds,
        "local-steps": args.local_steps,
        "lr": args.lr,
        "teacher-image-size": args.image_size,
        "probe-rounds": args.probe_rounds,
        "probe-local-steps": args.probe_local_steps,
        "probe-lr": args.probe_lr,
        "kd-mu": args.kd_mu,
        "kd-temperature": args.kd_temperature,
    }


def run_cell(partition: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    s = run_in_process(
        {**cell_settings(partition, method, args), "dataset": args.dataset, "seed": seed},
        run_name(args.name, partition, method, seed),
        args.clients,
    )
    return _row(partition, method, seed, s, args.rounds)


def _row(partition: str, method: str, seed: int, s: dict[str, Any], rounds: int) -> dict[str, Any]:
    final = s["final-per-model"]["cnn-small"]
    teacher = s.get("teacher", {}).get("test", {})
    return {
        "partition": partition,
        "method": method,
        "seed": seed,
        "final-accuracy": s["final-accuracy"],
        "worst-class-accuracy": final["worst-class-accuracy"],
        "best-accuracy": s["best-accuracy"],
        "teacher-accuracy": teacher.get("accuracy"),
        "teacher-worst-class-accuracy": teacher.get("worst-class-accuracy"),
        # With 1-2 classes per client the global model swings from round to round; the mean of
        # the last three rounds is steadier than the final round alone.
        "last3-accuracy": float(np.mean([r["accuracy"] for r in _metrics(s)[-3:]])),
        "bytes-per-round": (s["total-bytes-down"] + s["total-bytes-up"]) / rounds,
        "seconds": s.get("wall-seconds"),
    }


def _metrics(summary: dict[str, Any]) -> list[dict[str, Any]]:
    with open(summary["paths"]["metrics"]) as f:
        return [json.loads(line) for line in f]


def table(results: list[dict[str, Any]], central: dict[str, float]) -> list[str]:
    """Mean ± std over seeds per cell; gains over FedAvg as the mean and then each seed's."""

    def cell(partition: str, method: str, key: str) -> str:
        vals = [
            r[key]
            for r in results
            if (r["partition"], r["method"]) == (partition, method) and r.get(key) is not None
        ]
        if not vals:
            return "-"
        sd = f" ± {np.std(vals):.3f}" if len(vals) > 1 else ""
        return f"{np.mean(vals):.3f}{sd}"

    def gain(partition: str, method: str, key: str) -> str:
        return _gain_text(seed_gains(results, partition, method, key))

    def last3(partition: str, method: str) -> str:  # the mean only: the cell is crowded
        return _gain_text(seed_gains(results, partition, method, "last3-accuracy"), False)

    fmds = ("FMD", "FMD (weighted)", "FMD (lda probe)")
    lines = [
        "| partition | seeds | "
        + " | ".join(METHODS)
        + " | FMD - FedAvg, pts (per seed) | weighted - FedAvg, pts (per seed) "
        "| lda probe - FedAvg, pts (per seed) | last-3-round gain FMD / weighted / lda "
        "| worst class FMD / weighted / lda / FedAvg "
        "| teacher (federated probe) | teacher (lda probe) | central probe |",
        "|---" * (len(METHODS) + 10) + "|",
    ]
    for partition in PARTITIONS:
        rows = [r for r in results if r["partition"] == partition]
        if not rows:
            continue
        seeds = sorted({r["seed"] for r in rows})
        worst = " / ".join(cell(partition, m, "worst-class-accuracy") for m in (*fmds, "FedAvg"))
        lines.append(
            f"| {partition} | {len(seeds)} "
            + "".join(f"| {cell(partition, m, 'final-accuracy')} " for m in METHODS)
            + "".join(f"| {gain(partition, m, 'final-accuracy')} " for m in fmds)
            + f"| {' / '.join(last3(partition, m) for m in fmds)} "
            f"| {worst} | {cell(partition, 'FMD', 'teacher-accuracy')} "
            f"| {cell(partition, 'FMD (lda probe)', 'teacher-accuracy')} "
            f"| {central['accuracy']:.3f} |"
        )
    return lines


def seed_gains(
    results: list[dict[str, Any]], partition: str, method: str, key: str
) -> dict[int, float]:
    """``method`` minus FedAvg on ``key`` for every seed both ran, in points."""
    by = {(r["method"], r["seed"]): r[key] for r in results if r["partition"] == partition}
    return {
        seed: 100 * (by[(m, seed)] - by[("FedAvg", seed)])
        for (m, seed) in sorted(by, key=lambda k: k[1])
        if m == method and ("FedAvg", seed) in by
    }


def _gain_text(gains: dict[int, float], per_seed: bool = True) -> str:
    if not gains:
        return "-"
    mean = f"{np.mean(list(gains.values())):+.1f}"
    if not per_seed or len(gains) == 1:
        return mean
    return f"{mean} ({', '.join(f'{g:+.1f}' for g in gains.values())})"


def rescore(name: str) -> None:
    """Recompute every row from the kept run directories (e.g. after adding a column)."""
    saved = json.loads((OUT / f"{name}.json").read_text())
    rounds = saved["meta"]["settings"]["rounds"]
    results = []
    for r in saved["results"]:
        run = run_name(name, r["partition"], r["method"], r["seed"])
        path = OUT / "runs" / run / "summary.json"
        summary = {**json.loads(path.read_text()), "wall-seconds": r["seconds"]}
        results.append(_row(r["partition"], r["method"], r["seed"], summary, rounds))
    saved["results"] = results
    write(name, saved)


def write(name: str, saved: dict[str, Any]) -> None:
    (OUT / f"{name}.json").write_text(json.dumps(saved, indent=2))
    lines = table(saved["results"], saved["meta"]["central-probe"])
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist", choices=sorted(DATA))
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--probe-rounds", type=int, default=30)
    p.add_argument("--probe-local-steps", type=int, default=5)
    p.add_argument("--probe-lr", type=float, default=2.0)
    p.add_argument("--kd-mu", type=float, default=0.5)
    p.add_argument("--kd-temperature", type=float, default=4.0)
    p.add_argument("--seeds", default="0")
    p.add_argument("--headline-seeds", default="0,1,2", help=f"seeds for {', '.join(HEADLINE)}")
    p.add_argument("--partitions", default=",".join(PARTITIONS))
    p.add_argument(
        "--methods", default=",".join(METHODS), help=f"rows to run, of: {', '.join(METHODS)}"
    )
    p.add_argument(
        "--name", default="", help="results/<name>.{json,md} and run names (default: fmd[-dataset])"
    )
    p.add_argument("--precompute-only", action="store_true")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs of the saved table (same settings) and run only the missing ones",
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="rebuild <name>.json/md from the runs kept in results/runs (no training)",
    )
    return p


def plan(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Every (partition, method, seed) the arguments ask for, seed-major within a partition."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := set(methods) - set(METHODS):
        raise SystemExit(f"--methods: unknown {sorted(unknown)}; known: {list(METHODS)}")
    partitions = [p.strip() for p in args.partitions.split(",") if p.strip()]
    if unknown := set(partitions) - set(PARTITIONS):
        raise SystemExit(f"--partitions: unknown {sorted(unknown)}; known: {list(PARTITIONS)}")
    out = []
    for partition in partitions:
        seeds = {int(s) for s in args.seeds.split(",")}
        if partition in HEADLINE:
            seeds |= {int(s) for s in args.headline_seeds.split(",")}
        out += [(partition, m, seed) for seed in sorted(seeds) for m in methods]
    return out


def main() -> None:
    args = parser().parse_args()
    args.name = args.name or ("fmd" if args.dataset == "fmnist" else f"fmd-{args.dataset}")
    OUT.mkdir(parents=True, exist_ok=True)
    if args.rescore:
        rescore(args.name)
        return
    todo = plan(args)
    pre = precompute(args.dataset, args.image_size)
    print(json.dumps({"precompute": pre}), flush=True)
    if args.precompute_only:  # run it on a cold cache to time the featurisation itself
        (OUT / f"{args.name}-precompute.json").write_text(json.dumps(pre, indent=2))
        return
    results: list[dict[str, Any]] = []
    saved_path = OUT / f"{args.name}.json"
    if args.resume and saved_path.exists():
        saved = json.loads(saved_path.read_text())
        settings = {"dataset": "fmnist", **saved["meta"]["settings"]}  # older tables: fmnist
        if differ := [k for k in SAME if settings.get(k) != vars(args)[k]]:
            raise SystemExit(f"--resume: {saved_path} was made with other {', '.join(differ)}")
        results = saved["results"]
    central = central_probe(args)
    print(json.dumps({"central-probe": central}), flush=True)
    done = {(r["partition"], r["method"], r["seed"]) for r in results}
    student = build_model("cnn-small", (1, 28, 28), 10)
    meta = {
        "data": DATA[args.dataset],
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k not in ("precompute_only", "rescore", "resume", "methods")
        },
        "student": {
            "architecture": "cnn-small",
            "parameters": count_parameters(student),
            "macs": count_flops(student, (1, 28, 28)),
        },
        "precompute": pre,
        "central-probe": central,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} torch threads, python {platform.python_version()}",
    }
    for partition, method, seed in todo:
        if (partition, method, seed) in done:
            continue
        print(f"[fmd] {partition} / {method} / seed {seed}", flush=True)
        results.append(run_cell(partition, method, seed, args))
        print(json.dumps(results[-1]), flush=True)
        write(args.name, {"meta": meta, "results": results})
    write(args.name, {"meta": meta, "results": results})
    print((OUT / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
