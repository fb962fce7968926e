"""A federation's data, deterministic from a :class:`DataSpec`: partitions, test and public splits.

The same spec, sent by the server inside every message's config, lets each node rebuild exactly
its own partition with no shared memory, so the code is identical in simulation (all nodes in one
process) and deployment (a fresh process per message). Partition index arrays are cached on disk,
keyed by the spec, so that a fresh process pays for the partitioner once per machine.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from protocol.settings import Section, Setting

from .atomic import save_npz
from .memo import read_once
from .partition import PARTITIONERS, label_counts, partition_indices
from .sources import SOURCES, ImageSplits, default_data_dir, load_source
from .splits import balanced_holdout, carve_public

log = logging.getLogger(__name__)

DATA_SETTINGS = Section(
    "data",
    (
        Setting(
            "dataset",
            "fmnist",
            "offline: fmnist, mnist10k, digits; online (download=true): mnist, cifar10, "
            "cifar100, celeba",
            choices=SOURCES,
        ),
        Setting(
            "partitioner",
            "dirichlet",
            "how the training pool is split among clients",
            choices=PARTITIONERS,
        ),
        Setting(
            "alpha", 0.5, "Dirichlet concentration (smaller = more skewed)", low=0.0, low_open=True
        ),
        Setting("classes-per-client", 2, "pathological partitioner: classes per client", low=1),
        Setting("shards-per-client", 2, "shard partitioner: label-sorted shards per client", low=1),
        Setting(
            "min-partition-size",
            0,
            "Dirichlet resampling floor; 0 accepts tiny or empty clients",
            low=0,
        ),
        Setting(
            "num-partitions",
            0,
            "number of client partitions; 0 = taken from the nodes' config",
            low=0,
        ),
        Setting("train-subset", 0, "use only this many training images (0 = all)", low=0),
        Setting(
            "public-fraction",
            0.0,
            "share of the training pool held out as the server's unlabelled public split",
            low=0.0,
            high=0.9,
        ),
        Setting(
            "gate-per-class",
            0,
            "labelled training images per class the server keeps for aggregation's loss-gate "
            "(taken out of the clients' pool; 0 = none)",
            low=0,
        ),
        Setting(
            "data-dir", "", "dataset and cache directory (default: $BOUQUET_DATA_DIR or .data)"
        ),
        Setting("download", False, "allow downloading the online datasets and weights"),
    ),
    "What every node needs to rebuild exactly its own partition (sent as ``data.*`` keys).",
)


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines the clients' data. Sent to nodes as a flat config."""

    dataset: str = DATA_SETTINGS.default("dataset")
    partitioner: str = DATA_SETTINGS.default("partitioner")
    num_partitions: int = DATA_SETTINGS.default("num-partitions")
    alpha: float = DATA_SETTINGS.default("alpha")
    classes_per_client: int = DATA_SETTINGS.default("classes-per-client")
    shards_per_client: int = DATA_SETTINGS.default("shards-per-client")
    min_partition_size: int = DATA_SETTINGS.default("min-partition-size")
    train_subset: int = DATA_SETTINGS.default("train-subset")
    public_fraction: float = DATA_SETTINGS.default("public-fraction")
    gate_per_class: int = DATA_SETTINGS.default("gate-per-class")
    seed: int = 0  # the run's seed
    data_dir: str = DATA_SETTINGS.default("data-dir")
    download: bool = DATA_SETTINGS.default("download")

    def to_config(self) -> dict[str, int | float | str | bool]:
        """Flat kebab-case dict, fit for a Flower ``ConfigRecord``."""
        return {f"data.{k.replace('_', '-')}": v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict) -> DataSpec:  # type: ignore[type-arg]
        kwargs = {}
        for f in fields(cls):
            key = f"data.{f.name.replace('_', '-')}"
            if key not in config:
                raise KeyError(f"message config lacks {key!r}")
            kwargs[f.name] = type(getattr(cls, f.name))(config[key])
        return cls(**kwargs)

    def partition_key(self) -> str:
        """Hash of the fields that decide the partition indices (not data_dir/download)."""
        keyed = {k: v for k, v in asdict(self).items() if k not in ("data_dir", "download")}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(x: np.ndarray) -> str:
    """Short hash of an image array's shape and a strided sample of its rows: the data part
    of per-sample cache keys (teacher outputs)."""
    step = max(1, len(x) // 256)
    return hashlib.sha256(repr(x.shape).encode() + x[::step].tobytes()).hexdigest()[:12]


@dataclass(frozen=True)
class ArrayDataset:
    """uint8 images (N, C, H, W) and int64 labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


class Federation:
    """The data of one federation: training pool, partitions, server test and public splits."""

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self.source: ImageSplits = load_source(spec.dataset, spec.data_dir, spec.download)
        self.pool, self.public_idx, self.gate_idx = self._training_pool()
        self._parts: list[np.ndarray] | None = None

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.source.input_shape

    @property
    def cache_dir(self) -> Path:
        """Where per-machine caches live: ``<data-dir>/cache``."""
        return (Path(self.spec.data_dir) if self.spec.data_dir else default_data_dir()) / "cache"

    def data_key(self, split: str = "train") -> str:
        """Names the source's ``train`` or ``test`` split in per-sample caches."""
        x = self.source.x_train if split == "train" else self.source.x_test
        return f"{self.spec.dataset}-{split}-{fingerprint(x)}"

    @property
    def test(self) -> ArrayDataset:
        """The server's held-out test split: nothing ever trains on it."""
        return ArrayDataset(self.source.x_test, self.source.y_test)

    @property
    def public(self) -> ArrayDataset:
        """Unlabelled public split (labels kept only for diagnostics; never trained on)."""
        idx = self.public_idx
        return ArrayDataset(self.source.x_train[idx], self.source.y_train[idx])

    @property
    def gate(self) -> ArrayDataset:
        """Labelled split the server checks new aggregates on (never trained on; empty unless
        ``gate-per-class`` > 0)."""
        idx = self.gate_idx
        return ArrayDataset(self.source.x_train[idx], self.source.y_train[idx])

    def partitions(self) -> list[np.ndarray]:
        """Index arrays into the source's training split, one per client."""
        if self._parts is None:
            self._parts = self._load_or_build_partitions()
        return self._parts

    def partition(self, partition_id: int) -> ArrayDataset:
        n = self.spec.num_partitions
        if not 0 <= partition_id < n:
            raise ValueError(f"partition-id={partition_id} outside [0, {n})")
        idx = self.partitions()[partition_id]
        return ArrayDataset(self.source.x_train[idx], self.source.y_train[idx])

    def label_counts(self) -> np.ndarray:
        return label_counts(self.source.y_train, self.partitions(), self.num_classes)

    # ----------------------------------------------------------------- internals

    def _training_pool(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clients' pool, public split, gate split): training indices after the optional
        subset, the public carve-out and the server's balanced gate split."""
        n = len(self.source.y_train)
        rng = np.random.default_rng(self.spec.seed)
        pool = np.arange(n)
        if 0 < self.spec.train_subset < n:
            pool = np.sort(rng.permutation(n)[: self.spec.train_subset])
        public, private = carve_public(pool, self.spec.public_fraction, self.spec.seed + 1)
        gate = np.empty(0, dtype=private.dtype)
        if self.spec.gate_per_class > 0:
            labels = self.source.y_train[private]
            try:
                held, rest = balanced_holdout(labels, self.spec.gate_per_class, self.spec.seed + 2)
            except ValueError as err:
                raise ValueError(f"gate-per-class={self.spec.gate_per_class}: {err}") from err
            gate, private = private[held], private[rest]
        return private, public, gate

    def _cache_path(self) -> Path:
        # "-flat": every partition in one array (an older cache held one array per partition,
        # and reading 10,000 of them cost 0.8 s per message)
        return self.cache_dir / "partitions" / f"{self.spec.partition_key()}-flat.npz"

    def _load_or_build_partitions(self) -> list[np.ndarray]:
        path = self._cache_path()
        if path.exists():
            try:
                parts = read_once(path, _read_partitions)
                if len(parts) == self.spec.num_partitions:
                    return parts
            except (OSError, ValueError, KeyError):
                pass
            path.unlink(missing_ok=True)
        s = self.spec
        local = partition_indices(
            self.source.y_train[self.pool],
            s.num_partitions,
            s.partitioner,
            seed=s.seed,
            alpha=s.alpha,
            classes_per_client=s.classes_per_client,
            shards_per_client=s.shards_per_client,
            min_partition_size=s.min_partition_size,
        )
        parts = [self.pool[p] for p in local]
        offsets = np.cumsum([0, *(len(p) for p in parts)])
        save_npz(path, indices=np.concatenate(parts), offsets=offsets)
        return read_once(path, _read_partitions)  # read-only, like every later read


def _read_partitions(path: Path) -> list[np.ndarray]:
    """Read-only index arrays of a flat partition cache (``indices`` cut at ``offsets``)."""
    with np.load(path) as z:
        indices, offsets = z["indices"], z["offsets"]
    if offsets[0] != 0 or offsets[-1] != len(indices) or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{path}: offsets do not cut the indices")
    indices.setflags(write=False)
    return [indices[a:b] for a, b in itertools.pairwise(offsets)]
