"""Aggregation math, kept free of Flower types so that it is easy to test by hand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .state import Arrays


def weighted_average(models: list[Arrays], weights: Sequence[float]) -> Arrays:
    """Weighted mean of floating-point arrays.

    Integer arrays (BatchNorm's ``num_batches_tracked``) are counters, not parameters: the
    result takes the heaviest contributor's value.

    Raises
    ------
    ValueError
        If there is nothing to average or all weights are zero.
    """
    if not models:
        raise ValueError("no models to average")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    w = w / w.sum()
    heaviest = int(np.argmax(w))
    out: Arrays = {}
    for name, ref in models[0].items():
        if np.issubdtype(ref.dtype, np.floating):
            acc = np.zeros(ref.shape, dtype=np.float64)
            for wi, m in zip(w, models, strict=True):
                acc += wi * m[name]
            out[name] = acc.astype(ref.dtype)
        else:
            out[name] = models[heaviest][name].copy()
    return out
