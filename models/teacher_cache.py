"""On-disk cache of a frozen teacher's outputs, keyed by sample index.

The foundation-model forward is the expensive part of distillation and its weights never change,
so each sample is featurised once per machine: the outputs are stored in float16 in one cache per
(teacher weights, preprocessing, data source), whose header records all three. Rows are keyed by
the sample's index in the source's training split, so every partition, round and run of the same
data reuses them. Two files: ``<name>.index.npz`` (header and the indices, in row order) and
``<name>.values.npy`` (float16 rows, memory-mapped on read). Rows are only appended; writers merge
under a file lock (simulation runs many clients at once) and replace each file atomically, values
before index, so a crash never leaves a cache that maps an index to the wrong row.

Values always pass through float16, computed or cached, so a run's result does not depend on
whether the cache was warm.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm  # progress on a terminal only (disable=None)

from .teachers import LogitsFileTeacher, PixelTeacher, Teacher, header_key

log = logging.getLogger(__name__)
CHUNK = 8192  # images featurised between two saves


def teacher_features(
    teacher: Teacher,
    images: np.ndarray,
    indices: np.ndarray,
    data_key: str,
    cache_dir: Path,
) -> tuple[np.ndarray, int]:
    """Features of ``images`` (whose source indices are ``indices``) as float32.

    Returns the features and how many had to be computed (0 on a warm cache).
    """
    if len(images) != len(indices):
        raise ValueError(f"{len(images)} images but {len(indices)} indices")
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(teacher, LogitsFileTeacher):
        return teacher.lookup(indices), 0
    if isinstance(teacher, PixelTeacher):  # cheaper to recompute than to read
        return teacher.features(images), 0
    header = teacher.cache_header(data_key)
    base = cache_dir / f"{teacher.name}-{header_key(header)}"
    cached_idx, values = _read(base, header, teacher.feature_dim)
    rows = _rows(cached_idx, indices)
    if (rows >= 0).all():
        return np.asarray(values[rows], dtype=np.float32), 0
    todo = np.flatnonzero(rows < 0)
    # Saved chunk by chunk: an interrupted featurisation (a long one on a small device) keeps
    # what it had computed.
    progress = tqdm(total=len(todo), desc="teacher features", unit="img", disable=None)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        progress.update(len(chunk))
        fresh = teacher.features(images[chunk]).astype(np.float16)
        with _locked(base):
            cached_idx, values = _read(base, header, teacher.feature_dim)  # others may write
            new = np.flatnonzero(_rows(cached_idx, indices[chunk]) < 0)
            new = new[np.sort(np.unique(indices[chunk][new], return_index=True)[1])]
            if len(new):
                cached_idx = np.concatenate([cached_idx, indices[chunk][new]])
                values = np.concatenate([np.asarray(values), fresh[new]])
                _write(base, header, cached_idx, values)
    progress.close()
    return np.asarray(values[_rows(cached_idx, indices)], dtype=np.float32), len(todo)


def _rows(cached_idx: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Row of each index in the cache, -1 where it is not there."""
    if len(cached_idx) == 0:
        return np.full(len(indices), -1, np.int64)
    order = np.argsort(cached_idx, kind="stable")
    pos = np.minimum(np.searchsorted(cached_idx[order], indices), len(order) - 1)
    rows = order[pos]
    return np.where(cached_idx[rows] == indices, rows, -1)


def _read(base: Path, header: dict[str, str | int], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The cached indices (in row order) and the values, memory-mapped: a node reads only the
    rows of its own partition, not the whole file."""
    empty = (np.zeros(0, np.int64), np.zeros((0, dim), np.float16))
    index, values_file = _paths(base)
    if not index.exists():
        return empty
    try:
        with np.load(index, allow_pickle=False) as z:
            stored = json.loads(str(z["header"]))
            if stored != header:
                raise ValueError(f"header {stored} != {header}")
            idx = z["indices"]
        values = np.load(values_file, mmap_mode="r", allow_pickle=False)
        # Rows are only ever appended and the values are replaced before the index, so a
        # reader may see more rows than indices, never fewer.
        if values.ndim != 2 or values.shape[1] != dim or values.shape[0] < len(idx):
            raise ValueError(f"values {values.shape} for {len(idx)} indices of dimension {dim}")
        if values.dtype != np.float16:
            raise ValueError(f"values are {values.dtype}, not float16")
        return idx, values
    except (OSError, ValueError, KeyError) as err:
        # A corrupt or foreign cache is rebuilt, never trusted.
        log.warning("ignoring teacher cache %s (%s); it will be rebuilt", index, err)
        return empty


def _write(base: Path, header: dict[str, str | int], idx: np.ndarray, values: np.ndarray) -> None:
    index, values_file = _paths(base)
    tmp_values = values_file.with_name(f"{values_file.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp_values, values)
    tmp_values.replace(values_file)
    tmp_index = index.with_name(f"{index.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp_index, header=np.array(json.dumps(header, sort_keys=True)), indices=idx)
    tmp_index.replace(index)


def _paths(base: Path) -> tuple[Path, Path]:
    return base.with_name(base.name + ".index.npz"), base.with_name(base.name + ".values.npy")


@contextmanager
def _locked(base: Path) -> Iterator[None]:
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_name(base.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
