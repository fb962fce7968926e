"""Weight-space interpolation between two models of one architecture (Mosaic's client gate).

The server and the nodes both build ``(1 - w) a + w b`` from the same two models, so the
arithmetic must be bit-identical on both sides: float64 element-wise products and one sum, cast
back to each array's dtype, no reduction whose order could differ.
"""

from __future__ import annotations

import numpy as np

Arrays = dict[str, np.ndarray]


def interpolate(a: Arrays, b: Arrays, weight: float) -> Arrays:
    """``(1 - weight) a + weight b`` for floating-point arrays; integer arrays (BatchNorm's
    ``num_batches_tracked``) are counters and come from the heavier side (``a`` at 0.5).

    Raises
    ------
    ValueError
        If the two models do not hold the same arrays of the same shapes.
    """
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("interpolation needs two models of one architecture")
    heavier = b if weight > 0.5 else a
    out: Arrays = {}
    for name, x in a.items():
        if np.issubdtype(x.dtype, np.floating):
            mixed = (1.0 - weight) * x.astype(np.float64) + weight * b[name].astype(np.float64)
            out[name] = mixed.astype(x.dtype)
        else:
            out[name] = heavier[name].copy()
    return out
