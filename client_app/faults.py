"""Deliberately bad replies, for testing a deployment's defences (never set in production).

A SuperNode started with ``--node-config "... inject-fault='nan'"`` corrupts the weights its
``train`` handler returns, so that a real gRPC federation can show the server dropping and
logging the reply instead of averaging it (tests/test_deployment.py).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

FAULTS = ("nan", "wrong-shape")


def inject_fault(arrays: ArrayRecord, fault: str) -> ArrayRecord:
    """``nan``: the first floating-point array becomes NaN; ``wrong-shape``: the first array
    loses its last element. The other arrays are returned as they are."""
    if fault not in FAULTS:
        raise ValueError(f"inject-fault={fault!r} is unknown; allowed: {', '.join(FAULTS)}")
    out, done = ArrayRecord(), False
    for name, array in arrays.items():
        value = array.numpy()
        if not done and fault == "nan" and np.issubdtype(value.dtype, np.floating):
            value, done = np.full_like(value, np.nan), True
        elif not done and fault == "wrong-shape":
            value, done = value.reshape(-1)[:-1].copy(), True
        out[name] = Array(value)
    return out
