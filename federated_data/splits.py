"""Index-level splits: balanced hold-outs, the unlabelled public split and FedH2L seed sets."""

from __future__ import annotations

import numpy as np


def balanced_holdout(
    labels: np.ndarray, per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``per_class`` indices of every class; return (held-out, rest), both sorted.

    Raises
    ------
    ValueError
        If a class has fewer than ``per_class`` examples.
    """
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than {per_class}")
        held.append(rng.choice(idx, size=per_class, replace=False))
    held_idx = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(labels)), held_idx, assume_unique=True)
    return held_idx, rest


def carve_public(indices: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (public, private) with ``fraction`` of them public.

    The public split is used *without its labels* (server-side distillation data).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"public-fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(indices)
    n_public = round(fraction * len(indices))
    return np.sort(shuffled[:n_public]), np.sort(shuffled[n_public:])


def carve_seed_set(
    partitions: list[np.ndarray], labels: np.ndarray, per_class: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each client donates up to ``per_class`` labelled examples of every class it holds.

    Returns the seed set (indices into ``labels``, in one global order: by donating client,
    then by class) and the clients' partitions with their donations removed, so that the
    seed set and the local training data never overlap.
    """
    rng = np.random.default_rng(seed)
    seed_parts: list[np.ndarray] = []
    remaining: list[np.ndarray] = []
    for part in partitions:
        donated = []
        for c in np.unique(labels[part]):
            members = part[labels[part] == c]
            take = min(per_class, len(members))
            donated.append(np.sort(rng.choice(members, size=take, replace=False)))
        donation = np.concatenate(donated) if donated else np.empty(0, dtype=np.int64)
        seed_parts.append(donation)
        remaining.append(np.setdiff1d(part, donation))
    return np.concatenate(seed_parts).astype(np.int64), remaining
