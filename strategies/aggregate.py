"""Aggregation math, kept free of Flower types so that it is easy to test by hand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.server.strategy.aggregate import (
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)

from .state import Arrays

# How a group of client models becomes one: the sample-weighted mean (FedAvg, the papers'
# default) or a defence against a minority of bad clients (unweighted, as in Flower's
# FedMedian, FedTrimmedAvg and MultiKrum, whose aggregation functions are reused here).
ROBUST_AGGREGATIONS = ("mean", "trimmed-mean", "median", "multi-krum")


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


def robust_average(
    models: list[Arrays], weights: Sequence[float], method: str = "mean", fraction: float = 0.2
) -> Arrays:
    """Aggregate float arrays by ``method``; integer arrays as in :func:`weighted_average`.

    ``fraction`` is the share of clients assumed bad: cut from each end by ``trimmed-mean``,
    and ``f`` of multi-Krum (it keeps the ``n - f`` models with the best Krum scores and
    averages them weighted by examples, zero-example clients counting as one).
    """
    if method == "mean":
        return weighted_average(models, weights)
    if method not in ROBUST_AGGREGATIONS:
        raise ValueError(f"aggregation={method!r} is unknown; allowed: {ROBUST_AGGREGATIONS}")
    if not models:
        raise ValueError("no models to average")
    floats = [k for k, v in models[0].items() if np.issubdtype(v.dtype, np.floating)]
    results = [
        ([m[k] for k in floats], max(int(w), 1)) for m, w in zip(models, weights, strict=True)
    ]
    if method == "median":
        layers = aggregate_median(results)
    elif method == "trimmed-mean":
        layers = aggregate_trimmed_avg(results, proportiontocut=fraction)
    else:
        bad = int(fraction * len(models))
        layers = aggregate_krum(results, num_malicious=bad, to_keep=len(models) - bad)
    # integer arrays (counters) as weighted_average treats them, without re-averaging floats
    counters = [{k: v for k, v in m.items() if k not in floats} for m in models]
    counted = weighted_average(counters, [max(float(w), 1.0) for w in weights])
    averaged = {
        name: np.asarray(layer).astype(models[0][name].dtype)
        for name, layer in zip(floats, layers, strict=True)
    }
    return {k: averaged[k] if k in averaged else counted[k] for k in models[0]}  # state order


def clip_updates(models: list[Arrays], reference: Arrays, factor: float) -> list[Arrays]:
    """Scale every update ``model - reference`` whose L2 norm (over all float arrays) exceeds
    ``factor`` times the median update norm down to that bound; ``factor`` 0 leaves them."""
    if factor <= 0 or not models:
        return models
    floats = [k for k, v in reference.items() if np.issubdtype(v.dtype, np.floating)]
    norms = np.array(
        [
            np.sqrt(
                sum(float(np.sum((m[k].astype(np.float64) - reference[k]) ** 2)) for k in floats)
            )
            for m in models
        ]
    )
    bound = factor * float(np.median(norms))
    out = []
    for m, norm in zip(models, norms, strict=True):
        if norm <= bound or norm == 0:
            out.append(m)
            continue
        scale = bound / norm
        clipped = dict(m)
        for k in floats:
            clipped[k] = (reference[k] + scale * (m[k].astype(np.float64) - reference[k])).astype(
                m[k].dtype
            )
        out.append(clipped)
    return out


def all_finite(arrays: Arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays.values() if np.issubdtype(a.dtype, np.floating))
