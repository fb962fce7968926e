"""Pre-partitioned datasets on a node's disk: the route for real deployments and edge devices.

A node started with ``--node-config dataset-path=/data/part-3.npz`` trains on that file instead
of rebuilding a partition. The file is a NumPy ``.npz`` with

* ``x``: uint8 images, shape (N, C, H, W)
* ``y``: int64 labels, shape (N,)
* ``dataset``: the source name (checked against the run's dataset)
* ``num-classes``: number of classes

``python -m federated_data.export`` writes such files for every partition of a spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .federation import ArrayDataset, DataSpec, Federation


class DatasetFileError(ValueError):
    """A pre-partitioned dataset file is missing or malformed; the message names the problem."""


def write_partitions(spec: DataSpec, out_dir: str | Path) -> list[Path]:
    """Write one ``partition-<i>.npz`` per client plus ``manifest.json``; return the paths."""
    fed = Federation(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    counts = fed.label_counts()
    for i in range(spec.num_partitions):
        part = fed.partition(i)
        path = out / f"partition-{i}.npz"
        np.savez_compressed(
            path,
            x=part.x,
            y=part.y,
            dataset=spec.dataset,
            **{"num-classes": np.int64(fed.num_classes)},  # type: ignore[arg-type]
        )
        paths.append(path)
    manifest = {
        "spec": spec.to_config(),
        "partitions": [
            {"file": p.name, "partition-id": i, "label-counts": counts[i].tolist()}
            for i, p in enumerate(paths)
        ],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return paths


def read_partition_file(
    path: str | Path, *, dataset: str, input_shape: tuple[int, ...], num_classes: int
) -> ArrayDataset:
    """Load and validate a pre-partitioned file against the run's dataset."""
    p = Path(path)
    if not p.is_file():
        raise DatasetFileError(f"dataset-path={str(p)!r} does not exist or is not a file")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = {"x", "y", "dataset", "num-classes"} - set(z.files)
            if missing:
                raise DatasetFileError(f"{p}: missing arrays {sorted(missing)}")
            x, y = z["x"], z["y"]
            file_dataset, file_classes = str(z["dataset"]), int(z["num-classes"])
    except DatasetFileError:
        raise
    except Exception as err:  # zip/npz corruption surfaces as many exception types
        raise DatasetFileError(f"{p}: not a readable .npz file ({err})") from err
    if file_dataset != dataset:
        raise DatasetFileError(f"{p}: holds dataset {file_dataset!r}, the run uses {dataset!r}")
    if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise DatasetFileError(
            f"{p}: x must be uint8 of shape (N, {', '.join(map(str, input_shape))}), "
            f"got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetFileError(
            f"{p}: y must be integer of shape ({len(x)},), got {y.dtype} {y.shape}"
        )
    if file_classes != num_classes or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise DatasetFileError(f"{p}: labels must lie in [0, {num_classes})")
    return ArrayDataset(x, y.astype(np.int64))
