"""Offline quality of generated images, measured in the feature space of a classifier trained
on the real training set (no Inception weights exist offline, so nothing here is called FID).

* ``fd``: Frechet distance between Gaussians fitted to real and generated features;
* ``kid``: unbiased squared MMD with the cubic polynomial kernel, averaged over subsets;
* ``precision``, ``recall``, ``density``, ``coverage``: Naeem et al. 2020 with k nearest
  neighbours (k = 5);
* ``classes-covered`` and ``class-tv``: the label histogram of generated samples under the
  classifier: classes holding at least half their uniform share, and the total-variation
  distance to the real label distribution (the check that matters for non-IID training).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn
from torch.nn import functional as F

from .experts import last_linear, penultimate_features
from .training import TrainConfig, images_to_tensor, seeded_generator, train_classifier
from .zoo import build_model

EVALUATOR_ARCH = "cnn-small"


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (rows)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^(1/2)) = sum of sqrt(eig(S_a^(1/2) S_b S_a^(1/2))), a symmetric PSD matrix:
    # stable even when the covariances are singular (fewer samples than dimensions).
    w, v = linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_root = np.sqrt(np.clip(linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)


def kernel_inception_style_distance(
    a: np.ndarray, b: np.ndarray, *, subsets: int = 10, subset_size: int = 1000, seed: int = 0
) -> float:
    """Unbiased MMD^2 under k(x, y) = (x.y / d + 1)^3, mean over random subsets."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)].astype(np.float64)
        y = b[rng.choice(len(b), m, replace=False)].astype(np.float64)
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(off - 2 * kxy.mean())
    return float(np.mean(values))


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage with k-NN balls (Naeem et al. 2020)."""
    real_t = torch.from_numpy(real).double()
    fake_t = torch.from_numpy(fake).double()
    d_rr = torch.cdist(real_t, real_t)
    d_ff = torch.cdist(fake_t, fake_t)
    d_rf = torch.cdist(real_t, fake_t)
    # radius = distance to the k-th neighbour, itself excluded (index k after sorting)
    r_real = d_rr.kthvalue(k + 1, dim=1).values
    r_fake = d_ff.kthvalue(k + 1, dim=1).values
    inside_real = d_rf < r_real[:, None]  # (real i, fake j): fake j in real i's ball
    return {
        "precision": float(inside_real.any(0).double().mean()),
        "recall": float((d_rf < r_fake[None, :]).any(1).double().mean()),
        "density": float(inside_real.sum(0).double().mean() / k),
        "coverage": float((d_rf.min(1).values < r_real).double().mean()),
    }


def class_coverage(
    predicted: np.ndarray, real_labels: np.ndarray, num_classes: int
) -> dict[str, float]:
    p = np.bincount(predicted, minlength=num_classes) / max(len(predicted), 1)
    q = np.bincount(real_labels, minlength=num_classes) / max(len(real_labels), 1)
    return {
        "classes-covered": float((p >= 0.5 / num_classes).sum()),
        "class-tv": float(0.5 * np.abs(p - q).sum()),
    }


class FeatureJudge:
    """A classifier trained on the real training set, used only to measure generated images.

    Images are taken at the generator's resolution (32x32) and resized to the classifier's
    input, so real references pass through the same resizing as generated samples.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int], num_classes: int):
        self.model = model.eval()
        self.input_shape = input_shape
        self.num_classes = num_classes

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        _, h, w = self.input_shape
        if images.shape[-2:] != (h, w):
            images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
        return images

    def features_and_labels(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features and predicted labels, from one forward pass (the head is the
        classifier's last layer, so its logits are head(features))."""
        with torch.no_grad():
            feats = penultimate_features(self.model, self._prepare(images))
            labels = last_linear(self.model)(feats).argmax(1)
        return feats.double().numpy(), labels.numpy()

    def score(
        self,
        fake: torch.Tensor,
        real_features: np.ndarray,
        real_labels: np.ndarray,
        *,
        seed: int = 0,
    ) -> dict[str, float]:
        """All metrics of ``fake`` (in [-1, 1]) against the features of real images, which
        the caller computes once (:meth:`features_and_labels`) for every round."""
        f_real = real_features
        f_fake, predicted = self.features_and_labels(fake)
        return {
            "fd": frechet_distance(f_real, f_fake),
            "kid": kernel_inception_style_distance(f_real, f_fake, seed=seed),
            **prdc(f_real, f_fake),
            **class_coverage(predicted, real_labels, self.num_classes),
        }


def train_judge(
    x: np.ndarray,
    y: np.ndarray,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    cache_dir: Path,
    data_key: str,
    steps: int = 2000,
    seed: int = 0,
) -> tuple[FeatureJudge, dict[str, float]]:
    """Train (or load from ``cache_dir``) the judge on 90% of the real training images;
    returns it with its accuracy on the other 10% (a seeded random split: some training
    files, MNIST-10k's among them, are sorted by label, and their tail is a single class)."""
    key = {"arch": EVALUATOR_ARCH, "data": data_key, "n": len(y), "steps": steps, "seed": seed}
    key["split"] = "seeded-permutation"
    key["init"] = "seeded"  # judges cached before the init was seeded started from random weights
    key["torch"] = torch.__version__.split("+")[0]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir / "judges" / f"{digest}.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the judge's initial weights: the same in every process
        model = build_model(EVALUATOR_ARCH, input_shape, num_classes)
    order = np.random.default_rng([seed, 0x7D]).permutation(len(y))
    cut = int(len(y) * 0.9)
    train_idx, held_idx = np.sort(order[:cut]), np.sort(order[cut:])
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        info = {k: float(v) for k, v in saved["info"].items()}
    else:
        cfg = TrainConfig(steps=steps, batch_size=64, lr=0.05, momentum=0.9)
        gen = seeded_generator(seed, 0x7D)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            train_classifier(model, x[train_idx], y[train_idx], cfg, gen, torch.device("cpu"))
        model.eval()
        with torch.no_grad():
            held = images_to_tensor(x[held_idx])
            acc = float((model(held).argmax(1).numpy() == y[held_idx]).mean())
        info = {"held-out-accuracy": acc, "train-images": float(cut)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"model": model.state_dict(), "info": info}, tmp)
        tmp.replace(path)
    return FeatureJudge(model, input_shape, num_classes), info
