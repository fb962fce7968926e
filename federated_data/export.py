"""Write every partition of a federation to disk, for nodes started with ``dataset-path``.

Example::

    python -m federated_data.export --dataset fmnist --num-partitions 10 \\
        --partitioner dirichlet --alpha 0.5 --seed 0 --out partitions/fmnist-a0.5
    # then on node 3:  flower-supernode ... --node-config "dataset-path='.../partition-3.npz'"
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from .disk import write_partitions
from .federation import DataSpec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(DataSpec):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    parser.add_argument("--out", required=True, help="output folder")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    spec = DataSpec(**args)
    paths = write_partitions(spec, out)
    print(f"wrote {len(paths)} partitions and manifest.json to {out}")


if __name__ == "__main__":
    main()
