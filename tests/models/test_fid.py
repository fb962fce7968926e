"""The real-FID option: a named error where torchvision or the weights are missing."""

import pytest
import torch

from models.fid import InceptionFeatures


def test_missing_torchvision_or_weights_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached weights
    with pytest.raises(RuntimeError, match=r"prism-fid=true (needs torchvision|: Inception-v3)"):
        InceptionFeatures(download=False)
