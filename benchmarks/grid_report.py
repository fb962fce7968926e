"""Any grid file as a results table: runs (or resumes) the grid into benchmarks/results/runs and
writes benchmarks/results/<grid name>.md with ``bouquet compare``'s table and paired gaps.

    python -m benchmarks.grid_report grids/quickstart.yaml --gap-by method --reference fedavg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from benchmarks.harness import OUT, ROOT, machine
from bouquet import compare
from bouquet.grid import load_grid, run_grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grid", type=Path)
    p.add_argument("--gap-by", default="method")
    p.add_argument("--reference", default=None, help="default: the first value")
    args = p.parse_args()
    grid = load_grid(args.grid, ROOT, output_dir=OUT / "runs" / "grids")
    run_grid(grid)
    cells = compare.group([compare.load_run(grid.run_dir(c)) for c in grid.cells])
    reference = (
        yaml.safe_load(args.reference) if args.reference else cells[0].settings.get(args.gap_by)
    )
    gaps = compare.paired_gaps(cells, args.gap_by, reference, "final")
    keys = [k for k in compare.varying(cells) if k != args.gap_by]
    text = (
        f"Grid `{args.grid}`, run in process on {machine()}.\n\n"
        + compare.table(cells)
        + "\n"
        + compare.gap_table(gaps, keys, args.gap_by, reference)
    )
    (OUT / f"{grid.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
