"""A teacher head from the federation's exact class statistics (FMD's ``probe=lda``).

A linear probe trained by FedAvg drifts under label skew: each node's steps pull the head toward
its own few classes: on MNIST-10k at Dirichlet 0.01 it reaches 0.70-0.74, where the head below
reaches 0.934 (docs/benchmarks.md). Linear discriminant analysis needs only
sums: per-class feature sums, per-class counts and the sum of outer products. Sums of the nodes'
sums are the pooled data's, whatever the skew, so the head below is the one the pooled features
give, computed without any node's features leaving it (and a secure-aggregation sum would do).

LDA's logits are over-confident (its discriminants grow with the feature dimension), so the head
is then scaled by the factor that minimises the federation's summed cross-entropy over a fixed
grid (temperature scaling; the sums of per-node losses are again exact under any skew). Without
it the teacher's soft labels at the usual distillation temperature are near one-hot.

Everything here is pure numpy on arrays; the messages are in ``client_app/fmd.py`` and
``strategies/fmd.py``.
"""

from __future__ import annotations

import numpy as np

# Calibration grid: factors applied to the LDA logits (log-spaced, 1e-3 .. 10).
SCALES = tuple(float(s) for s in np.logspace(-3, 1, 41))
ABSENT_LOGIT = -1e4  # a class no node holds: the teacher never names it


def expected_statistics(num_classes: int, dim: int) -> dict[str, np.ndarray]:
    """Shapes and dtypes of a node's statistics (what a reply is validated against)."""
    return {
        "class-sums": np.zeros((num_classes, dim), np.float32),
        "class-counts": np.zeros(num_classes, np.int64),
        "second-moment": np.zeros(dim * (dim + 1) // 2, np.float32),
    }


def class_statistics(
    features: np.ndarray, labels: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Per-class feature sums, per-class counts and the packed upper triangle of
    ``features.T @ features``: summed in float64, sent in float32 (3.3 MB for 1,280-d features,
    once per run; a relative rounding of 6e-8 that the shrunk covariance does not feel)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    sums = np.zeros((num_classes, f.shape[1]), np.float64)
    np.add.at(sums, y, f)
    return {
        "class-sums": sums.astype(np.float32),
        "class-counts": np.bincount(y, minlength=num_classes).astype(np.int64),
        "second-moment": pack_symmetric(f.T @ f).astype(np.float32),
    }


def pack_symmetric(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle, row by row (half the bytes of a symmetric matrix)."""
    return matrix[np.triu_indices(matrix.shape[0])]


def unpack_symmetric(packed: np.ndarray, dim: int) -> np.ndarray:
    out = np.zeros((dim, dim), packed.dtype)
    rows, cols = np.triu_indices(dim)
    out[rows, cols] = packed
    out[cols, rows] = packed
    return out


def check_statistics(stats: dict[str, np.ndarray], num_examples: int) -> str | None:
    """Why these statistics cannot be those of ``num_examples`` unit-norm features, or None.

    Teacher features are L2-normalised, so the second moment's trace is the example count and no
    class sum is longer than its count: a node cannot weigh more than its data in the head.
    """
    counts = stats["class-counts"]
    if (counts < 0).any() or int(counts.sum()) != num_examples:
        return f"class counts {counts.tolist()} do not sum to num-examples={num_examples}"
    dim = stats["class-sums"].shape[1]
    diagonal = stats["second-moment"][_diagonal_positions(dim)]
    tolerance = 1e-2 * max(num_examples, 1)  # float16 cache rounding
    if (diagonal < 0).any() or abs(float(diagonal.sum()) - num_examples) > tolerance:
        return f"the second moment's trace {diagonal.sum():.4g} is not num-examples={num_examples}"
    norms = np.linalg.norm(stats["class-sums"], axis=1)
    if (norms > counts * (1 + 1e-2) + 1e-6).any():
        return "a class sum is longer than its count of unit-norm features"
    return None


def _diagonal_positions(dim: int) -> np.ndarray:
    """Where the diagonal sits in a packed upper triangle."""
    rows = np.arange(dim)
    return rows * dim - rows * (rows - 1) // 2


def lda_head(
    sums: np.ndarray, counts: np.ndarray, second: np.ndarray, shrinkage: float
) -> dict[str, np.ndarray]:
    """The LDA head (equal class priors: the test sets are balanced) of pooled statistics.

    The shared within-class covariance is shrunk toward a multiple of the identity (Ledoit-Wolf
    style, fixed ``shrinkage`` in (0, 1]): the feature dimension is in the thousands and a node
    federation may hold fewer examples than that.
    """
    if not 0 < shrinkage <= 1:
        raise ValueError(f"shrinkage must be in (0, 1], not {shrinkage}")
    sums = np.asarray(sums, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    dim = sums.shape[1]
    present = counts > 0
    n = int(counts.sum())
    means = sums / np.maximum(counts, 1)[:, None]
    within = unpack_symmetric(second, dim) - sums[present].T @ means[present]
    cov = within / max(n - int(present.sum()), 1)
    scale = max(float(np.trace(cov)) / dim, 1e-12)
    cov = (1 - shrinkage) * cov + shrinkage * scale * np.eye(dim)
    weight = np.linalg.solve(cov, means.T).T
    bias = -0.5 * np.einsum("cd,cd->c", weight, means)
    weight[~present] = 0.0
    bias[~present] = ABSENT_LOGIT
    return {"weight": weight.astype(np.float32), "bias": bias.astype(np.float32)}


def scaled_nll_sums(logits: np.ndarray, labels: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Summed cross-entropy of ``scale * logits`` for every scale (float64, one per scale)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    out = np.zeros(len(scales), np.float64)
    for i, s in enumerate(scales):
        scaled = z * s
        top = scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
        out[i] = float((log_norm - scaled[np.arange(len(y)), y]).sum())
    return out


def scaled_head(head: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """The head times ``scale``, absent classes kept at :data:`ABSENT_LOGIT`."""
    bias = head["bias"] * scale
    bias[head["bias"] == ABSENT_LOGIT] = ABSENT_LOGIT
    return {"weight": (head["weight"] * scale).astype(np.float32), "bias": bias.astype(np.float32)}
