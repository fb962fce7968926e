"""Who hears whom in FedH2L: peer graphs over participants and the leave-one-out relay."""

from __future__ import annotations

import numpy as np

TOPOLOGIES = ("complete", "ring", "k-regular")


def neighbours(
    participants: list[int], topology: str, *, degree: int = 2, seed: int = 0, server_round: int = 0
) -> dict[int, list[int]]:
    """Peers of every participant (partition ids), sorted.

    * ``complete``: everybody else.
    * ``ring``: the previous and next participant in partition-id order.
    * ``k-regular``: a random circulant graph, re-drawn each round (gossip): participants in a
      permutation keyed by (seed, round), each linked to ``degree // 2`` on either side.
      ``degree`` must be even; a graph that cannot be that sparse becomes complete.
    """
    ids = sorted(participants)
    n = len(ids)
    if topology == "complete" or n <= 2:
        return {p: [q for q in ids if q != p] for p in ids}
    if topology == "ring":
        return {p: sorted({ids[(i - 1) % n], ids[(i + 1) % n]}) for i, p in enumerate(ids)}
    if topology == "k-regular":
        if degree < 2 or degree % 2:
            raise ValueError(f"topology-degree={degree} must be an even number >= 2")
        if degree >= n - 1:
            return neighbours(ids, "complete")
        order = [
            ids[i] for i in np.random.default_rng([seed, server_round, 0x60551]).permutation(n)
        ]
        half = degree // 2
        out: dict[int, set[int]] = {p: set() for p in ids}
        for i, p in enumerate(order):
            for d in range(1, half + 1):
                q = order[(i + d) % n]
                out[p].add(q)
                out[q].add(p)
        return {p: sorted(qs) for p, qs in out.items()}
    raise ValueError(f"topology={topology!r} is unknown; allowed: {', '.join(TOPOLOGIES)}")


def leave_one_out_means(
    posteriors: dict[int, np.ndarray],
    graph: dict[int, list[int]],
    weights: dict[int, float] | None = None,
) -> dict[int, np.ndarray]:
    """For each participant, the mean of its peers' posterior matrices (peers that have one),
    weighted by ``weights`` when given; a participant whose peers all weigh 0 gets none.

    With forward KL and equal peer weights this single matrix gives the same gradient as the
    full relay: the mean over peers of KL(P_j || p) differs from KL(mean_j P_j || p) only by
    the peers' entropies, which do not depend on the receiver's weights.
    """
    out = {}
    for p, peers in graph.items():
        have = [q for q in peers if q in posteriors]
        w = np.array([1.0 if weights is None else weights.get(q, 0.0) for q in have])
        if have and w.sum() > 0:
            stacked = np.stack([posteriors[q] for q in have]).astype(np.float64)
            out[p] = np.tensordot(w / w.sum(), stacked, axes=1).astype(np.float32)
    return out


def seed_agreement(posteriors: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """How far above chance a peer's posteriors agree with the seed set's labels, in [0, 1]:
    0 at or below chance (uniform or adversarial rows), 1 when every labelled row's argmax is
    its label. Unlabelled rows (label -1) are ignored; with none, every peer weighs 1."""
    labelled = labels >= 0
    if not labelled.any():
        return 1.0
    accuracy = float(np.mean(posteriors[labelled].argmax(1) == labels[labelled]))
    chance = 1.0 / num_classes
    return max(accuracy - chance, 0.0) / (1.0 - chance)
