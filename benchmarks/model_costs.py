"""Parameters and multiply-accumulates per image of every zoo architecture (docs/running.md table).

python -m benchmarks.model_costs
"""

from __future__ import annotations

from models.zoo import ARCHITECTURES, build_model, count_flops, count_parameters


def main() -> None:
    columns = ["architecture", "params (1x28x28)", "MACs (1x28x28)"]
    columns += ["params (3x32x32)", "MACs (3x32x32)"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|")
    for name in ARCHITECTURES:
        cells = []
        for shape in ((1, 28, 28), (3, 32, 32)):
            model = build_model(name, shape, 10)
            cells += [f"{count_parameters(model):,}", f"{count_flops(model, shape) / 1e6:.1f} M"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
