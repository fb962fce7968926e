import numpy as np
import pytest

from federated_data import DataSpec, Federation
from federated_data.disk import DatasetFileError, read_partition_file, write_partitions


def _spec(**kw):
    return DataSpec(**{"dataset": "digits", "num_partitions": 4, "alpha": 0.5, "seed": 0, **kw})


def test_partitions_exclude_public_split_and_test_is_untouched():
    fed = Federation(_spec(public_fraction=0.2))
    parts = np.concatenate(fed.partitions())
    assert len(np.intersect1d(parts, fed.public_idx)) == 0
    assert len(parts) + len(fed.public_idx) == len(fed.source.y_train)
    assert len(fed.test) == 300


def test_the_gate_split_is_balanced_labelled_and_no_client_holds_it():
    fed = Federation(_spec(public_fraction=0.2, gate_per_class=5))
    parts = np.concatenate(fed.partitions())
    assert np.bincount(fed.gate.y).tolist() == [5] * 10
    assert len(np.intersect1d(parts, fed.gate_idx)) == 0
    assert len(np.intersect1d(fed.public_idx, fed.gate_idx)) == 0
    assert len(parts) + len(fed.public_idx) + 50 == len(fed.source.y_train)
    assert len(Federation(_spec()).gate) == 0
    with pytest.raises(ValueError, match="gate-per-class=9999: class 0 has"):
        Federation(_spec(gate_per_class=9999))


def test_partitions_are_cached_and_identical_in_a_fresh_instance():
    spec = _spec(seed=11)
    first = Federation(spec).partitions()
    again = Federation(spec).partitions()  # read from the disk cache
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_spec_survives_the_config_record_round_trip():
    spec = _spec(public_fraction=0.1, download=True)
    assert DataSpec.from_config(spec.to_config()) == spec


def test_export_and_read_back(tmp_path):
    spec = _spec()
    paths = write_partitions(spec, tmp_path)
    assert (tmp_path / "manifest.json").exists()
    part = read_partition_file(paths[1], dataset="digits", input_shape=(1, 28, 28), num_classes=10)
    expected = Federation(spec).partition(1)
    assert np.array_equal(part.x, expected.x) and np.array_equal(part.y, expected.y)


def test_bad_partition_files_are_named(tmp_path):
    kw = {"dataset": "digits", "input_shape": (1, 28, 28), "num_classes": 10}
    with pytest.raises(DatasetFileError, match="does not exist"):
        read_partition_file(tmp_path / "none.npz", **kw)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DatasetFileError, match="not a readable"):
        read_partition_file(junk, **kw)
    wrong = tmp_path / "wrong.npz"
    np.savez(
        wrong,
        x=np.zeros((2, 1, 8, 8), np.uint8),
        y=np.zeros(2, np.int64),
        dataset="digits",
        **{"num-classes": 10},
    )
    with pytest.raises(DatasetFileError, match="shape"):
        read_partition_file(wrong, **kw)
    labels = tmp_path / "labels.npz"
    np.savez(
        labels,
        x=np.zeros((2, 1, 28, 28), np.uint8),
        y=np.array([0, 12]),
        dataset="digits",
        **{"num-classes": 10},
    )
    with pytest.raises(DatasetFileError, match="labels"):
        read_partition_file(labels, **kw)
    with pytest.raises(DatasetFileError, match="the run uses 'fmnist'"):
        read_partition_file(labels, **{**kw, "dataset": "fmnist"})
