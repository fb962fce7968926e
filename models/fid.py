"""Real FID, as an option for machines with internet: Inception-v3 pool features.

Uses torchvision's Inception-v3 (``IMAGENET1K_V1``, the TensorFlow weights ported) with its
classifier removed: 2048 pool features of images resized to 299x299, grey images repeated to
three channels. These are not the exact weights of the TF-FID reference implementation
(pytorch-fid ships those), so values come close to, but are not identical with, published FIDs;
that is why the metric is reported as ``fid-torchvision``. Needs the ``vision`` extra (a
torchvision built for your torch) and the weights file, fetched once with ``download=true``.
Neither exists on the offline machine this project is developed on: there only the error paths
and the scoring with a stand-in feature network were tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

FID_SIZE = 299


class InceptionFeatures:
    """Callable: images in [-1, 1], shape (N, C, H, W) -> (N, 2048) float64 pool features."""

    def __init__(self, *, download: bool = False, batch_size: int = 100) -> None:
        try:
            from torchvision.models import Inception_V3_Weights, inception_v3
        except Exception as err:  # ImportError, or a torchvision built for another torch
            raise RuntimeError(
                "prism-fid=true needs torchvision built for this torch "
                f"(pip install 'bouquet[vision]'); importing it failed: {err}"
            ) from err
        weights = Inception_V3_Weights.IMAGENET1K_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.exists() and not download:
            raise RuntimeError(
                f"prism-fid=true: Inception-v3 weights not found at {cached}; run once with "
                f"download=true (internet) or copy {Path(weights.url).name} there"
            )
        # transform_input=False: the ported TF weights take inputs in [-1, 1] as they are.
        model = inception_v3(weights=weights, aux_logits=True, transform_input=False)
        model.fc = nn.Identity()
        self.model = model.eval()
        self.batch_size = batch_size

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images
        x = F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)
        with torch.no_grad():
            feats = [self.model(batch) for batch in x.split(self.batch_size)]
        return torch.cat(feats).double().numpy()
