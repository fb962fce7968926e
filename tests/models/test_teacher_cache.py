"""The teacher cache: computed once per sample, reused by any partition, fp16, header-checked."""

import numpy as np
import pytest

from models.teacher_cache import teacher_features
from models.teachers import Teacher


class CountingTeacher(Teacher):
    """Features = a fixed random projection of the pixels; counts the images it featurises."""

    def __init__(self, preprocessing: str = "identity") -> None:
        self.name = "counting"
        self.num_classes = 3
        self.feature_dim = 4
        self.preprocessing = preprocessing
        self.weights_id = "w1"
        self.seen = 0
        self.proj = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)

    def features(self, images):
        self.seen += len(images)
        return images.reshape(len(images), -1).astype(np.float32) / 255 @ self.proj


@pytest.fixture
def images():
    return np.random.default_rng(1).integers(0, 256, size=(50, 1, 4, 4), dtype=np.uint8)


def test_each_sample_is_featurised_once_across_partitions(tmp_path, images):
    t = CountingTeacher()
    a = np.array([3, 1, 4, 15, 9])
    fa, computed = teacher_features(t, images[a], a, "data", tmp_path)
    assert computed == 5 and t.seen == 5
    again, computed = teacher_features(t, images[a], a, "data", tmp_path)
    assert computed == 0 and t.seen == 5
    assert np.array_equal(fa, again)  # cold and warm give identical (fp16-rounded) values
    assert np.allclose(fa, t.features(images[a]), atol=1e-2)
    b = np.array([9, 20, 1, 30])  # another partition overlapping the first
    fb, computed = teacher_features(t, images[b], b, "data", tmp_path)
    assert computed == 2
    assert np.array_equal(fb[[0, 2]], fa[[4, 1]])
    files = list(tmp_path.glob("counting-*.index.npz"))
    assert len(files) == 1
    with np.load(files[0]) as z:
        assert z["indices"].tolist() == [3, 1, 4, 15, 9, 20, 30]  # rows are only appended
        assert "identity" in str(z["header"])
    values = np.load(str(files[0]).replace(".index.npz", ".values.npy"))
    assert values.dtype == np.float16 and values.shape == (7, 4)


def test_other_preprocessing_or_data_never_shares_rows(tmp_path, images):
    idx = np.arange(5)
    teacher_features(CountingTeacher(), images[idx], idx, "data", tmp_path)
    other = CountingTeacher(preprocessing="resize 64")
    _, computed = teacher_features(other, images[idx], idx, "data", tmp_path)
    assert computed == 5
    _, computed = teacher_features(CountingTeacher(), images[idx], idx, "other-data", tmp_path)
    assert computed == 5
    assert len(list(tmp_path.glob("counting-*.index.npz"))) == 3


def test_a_corrupt_cache_is_rebuilt(tmp_path, images, caplog):
    t = CountingTeacher()
    idx = np.arange(6)
    first, _ = teacher_features(t, images[idx], idx, "data", tmp_path)
    path = next(tmp_path.glob("counting-*.values.npy"))
    path.write_bytes(b"not an npy")
    again, computed = teacher_features(t, images[idx], idx, "data", tmp_path)
    assert computed == 6 and np.array_equal(first, again)
    assert "ignoring teacher cache" in caplog.text


def test_a_partition_reads_its_rows_from_a_cache_written_by_others(tmp_path, images):
    writer, reader = CountingTeacher(), CountingTeacher()
    teacher_features(writer, images[:40], np.arange(40), "data", tmp_path)
    idx = np.array([39, 0, 17])
    got, computed = teacher_features(reader, images[idx], idx, "data", tmp_path)
    assert computed == 0 and reader.seen == 0
    assert np.allclose(got, writer.features(images[idx]), atol=1e-2)


def test_images_and_indices_must_agree(tmp_path, images):
    with pytest.raises(ValueError, match="5 images but 4 indices"):
        teacher_features(CountingTeacher(), images[:5], np.arange(4), "data", tmp_path)


def test_an_interrupted_featurisation_keeps_the_chunks_already_saved(tmp_path, images, monkeypatch):
    import models.teacher_cache as cache

    monkeypatch.setattr(cache, "CHUNK", 10)
    t = CountingTeacher()
    calls = 0
    features = t.features

    def crash_on_third_chunk(x):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return features(x)

    monkeypatch.setattr(t, "features", crash_on_third_chunk)
    idx = np.arange(50)
    with pytest.raises(KeyboardInterrupt):
        teacher_features(t, images, idx, "data", tmp_path)
    fresh = CountingTeacher()
    _, computed = teacher_features(fresh, images, idx, "data", tmp_path)
    assert computed == 30  # the first two chunks of 10 survived
