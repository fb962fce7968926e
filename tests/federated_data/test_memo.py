import numpy as np
import pytest

from federated_data import DataSpec, Federation
from federated_data.atomic import save_npz
from federated_data.memo import forget, read_once
from federated_data.sources import load_source


def test_a_file_is_read_once_until_it_is_rewritten(tmp_path):
    path = save_npz(tmp_path / "a.npz", x=np.arange(3))
    reads = []

    def read(p):
        reads.append(p)
        with np.load(p) as z:
            return z["x"]

    assert read_once(path, read).tolist() == [0, 1, 2]
    assert read_once(path, read).tolist() == [0, 1, 2]
    assert len(reads) == 1
    save_npz(path, x=np.arange(4))  # a rename: a new file, read again
    assert read_once(path, read).tolist() == [0, 1, 2, 3]
    assert len(reads) == 2
    forget()
    read_once(path, read)
    assert len(reads) == 3


def test_the_shared_dataset_and_partitions_cannot_be_written_into(tmp_path):
    source = load_source("digits", tmp_path)
    source = load_source("digits", tmp_path)  # the second read comes from the cache file
    with pytest.raises(ValueError, match="read-only"):
        source.x_train[0, 0, 0, 0] = 1
    spec = DataSpec(dataset="digits", num_partitions=3, data_dir=str(tmp_path))
    parts = Federation(spec).partitions()
    assert Federation(spec).partitions() is parts  # a warm process reads the cache once
    with pytest.raises(ValueError, match="read-only"):
        parts[0][0] = 0
    part = Federation(spec).partition(0)
    part.x[0] = 0  # what a node trains on is its own copy


def test_a_partition_cache_that_does_not_add_up_is_rebuilt(tmp_path):
    spec = DataSpec(dataset="digits", num_partitions=3, data_dir=str(tmp_path))
    expected = [p.copy() for p in Federation(spec).partitions()]
    (path,) = (tmp_path / "cache" / "partitions").glob("*-flat.npz")
    save_npz(path, indices=np.arange(5), offsets=np.array([0, 2, 9, 5]))
    again = Federation(spec).partitions()
    assert all(np.array_equal(a, b) for a, b in zip(expected, again, strict=True))
