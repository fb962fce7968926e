"""PRISM's local step in isolation: seconds per step of the client's training loop
(client_app.prism.local_steps: masked generator forward with fresh masks, EfficientNet-Lite0
moment matching, backward, Adam) for each generator size, batch and device, and what the
paper's schedule would cost at that speed.

The real statistics are random (they do not change the arithmetic's cost), the first
``--warmup`` steps are not timed, and the median of ``--repeats`` timed blocks is reported.
The paper's schedule is 10 clients x 500 rounds x 100 local steps at batch 64 with the full
generator; its cost is extrapolated as clients trained one after another on one device.

    python -m benchmarks.prism_step                        # CPU, small and full
    python -m benchmarks.prism_step --devices cpu,cuda --out-name prism-step-gpu
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from benchmarks.harness import OUT, machine
from client_app.prism import local_steps
from models.masked import GeneratorSpec, masked_layers, num_masked
from models.mmd import EfficientNetFeatures, MomentMatching

PAPER_STEPS = 10 * 500 * 100  # clients x rounds x local steps


def step_seconds(
    size: str, batch: int, device: str, steps: int, warmup: int, repeats: int, fold: bool = True
) -> dict[str, Any]:
    """Median seconds per local step of one configuration."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = GeneratorSpec(channels=1, size=size, seed=0).build().to(dev)
    phi = EfficientNetFeatures(fold=fold)
    with torch.no_grad():
        dim = phi(torch.zeros(2, 1, 32, 32)).shape[1]
    rng = np.random.default_rng(0)
    loss_fn = MomentMatching(
        phi, rng.normal(size=dim).astype(np.float32), rng.random(dim).astype(np.float32)
    ).to(dev)
    params = [layer.scores for _, layer in masked_layers(model)]
    optimizer = torch.optim.Adam(params, lr=0.1, betas=(0.5, 0.999))

    def block(n: int) -> float:
        t0 = time.perf_counter()
        losses = local_steps(model, loss_fn, optimizer, n, batch)
        float(losses.sum())  # waits for the device
        return (time.perf_counter() - t0) / n

    block(warmup)
    times = [block(steps) for _ in range(repeats)]
    median = float(np.median(times))
    return {
        "generator": size,
        "masked-weights": num_masked(model),
        "batch": batch,
        "device": device,
        "threads": torch.get_num_threads(),
        "bn-folded": fold,
        "seconds-per-step": round(median, 4),
        "spread": [round(min(times), 4), round(max(times), 4)],
        "paper-schedule-hours": round(median * PAPER_STEPS / 3600, 1),
    }


def table(report: dict[str, Any]) -> list[str]:
    lines = [
        f"{report['machine']}; torch {report['torch']}; {report['steps']} timed steps x "
        f"{report['repeats']} (median, min-max).",
        "",
        "| generator | weights | batch | device | threads | BN folded | s/step | min-max "
        "| paper schedule (h, one device) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['generator']} | {r['masked-weights']:,} | {r['batch']} | {r['device']} | "
            f"{r['threads']} | {'yes' if r['bn-folded'] else 'no'} | "
            f"{r['seconds-per-step']:.4f} | {r['spread'][0]:.4f}-"
            f"{r['spread'][1]:.4f} | {r['paper-schedule-hours']:,.1f} |"
        )
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="small,full")
    p.add_argument("--batches", default="32,64", help="32: our benchmarks; 64: the paper")
    p.add_argument("--devices", default="cpu")
    p.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    p.add_argument(
        "--compare-unfolded",
        action="store_true",
        help="also time the feature network with its batch norms unfolded (the code before)",
    )
    p.add_argument("--out-name", default="prism-step", help="results/<name>.{json,md}")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "machine": machine(),
        "torch": torch.__version__,
        "steps": args.steps,
        "repeats": args.repeats,
        "rows": [],
    }
    if any(d.startswith("cuda") for d in args.devices.split(",")):
        report["gpu"] = torch.cuda.get_device_name()
    for device in args.devices.split(","):
        for size in args.sizes.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                for fold in (False, True) if args.compare_unfolded else (True,):
                    row = step_seconds(
                        size, batch, device, args.steps, args.warmup, args.repeats, fold
                    )
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
                    OUT.mkdir(parents=True, exist_ok=True)
                    (OUT / f"{args.out_name}.json").write_text(json.dumps(report, indent=2))
                    (OUT / f"{args.out_name}.md").write_text("\n".join(table(report)) + "\n")
    print("\n".join(table(report)))
    return report


if __name__ == "__main__":
    main()
