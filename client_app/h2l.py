"""FedH2L client: a private model of the node's own architecture, trained by mutual distillation
through posteriors on a shared seed set.

The model and the seed set live in ``context.state`` (they survive between messages of a run,
in simulation and deployment alike); only posterior matrices leave the node. Reconstructed from
the abstract on Deep Mutual Learning; see ``strategies/fedh2l.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from torch import nn
from torch.func import functional_call

from federated_data import ArrayDataset
from models.device import resolve_device
from models.training import (
    SGD,
    TrainConfig,
    batch_indices,
    clip_gradient,
    images_to_tensor,
    predict_logits,
    seeded_generator,
)
from protocol import PEERS_KEY, POSTERIORS_KEY, SEED_SET_KEY, ErrorCode, NodeError, arrays_to_record
from protocol.posteriors import changed_rows, decode, encode, encode_update

from .node import load_node
from .private import keep_model, local_split, restore_model, scores

MODEL_STATE_KEY = "h2l-model"
SEED_STATE_KEY = "h2l-seed-set"
SENT_STATE_KEY = "h2l-sent"  # the posteriors as the server decoded them, and their round


def donate_seed_set(config: dict[str, Any], node_config: dict[str, Any]) -> ArrayRecord:
    """Up to ``seed-per-class`` labelled examples of every class this node holds, or the
    server's ``seed-quota`` per class where it caps the seed set."""
    node = load_node(config, node_config)
    per_class = int(config["seed-per-class"])
    quota = config.get("seed-quota")
    rng = np.random.default_rng([int(config["data.seed"]), node.partition_id, 0x5EED])
    picked = []
    for c in np.unique(node.data.y):
        members = np.flatnonzero(node.data.y == c)
        wanted = per_class if quota is None or c >= len(quota) else int(quota[c])
        picked.append(np.sort(rng.choice(members, size=min(wanted, len(members)), replace=False)))
    idx = np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
    return arrays_to_record({"x": node.data.x[idx], "y": node.data.y[idx]})


def peer_kl(
    logits: torch.Tensor, peer_probs: list[torch.Tensor], temperature: float
) -> torch.Tensor:
    """Mean over peers of KL(P_j || softmax(logits / T)), batch-averaged."""
    log_p = torch.log_softmax(logits / temperature, dim=1)
    kls = [nn.functional.kl_div(log_p, q, reduction="batchmean") for q in peer_probs]
    return torch.stack(kls).mean()


def h2l_objective(
    model: nn.Module,
    params: dict[str, torch.Tensor] | None,
    seed_x: torch.Tensor | None,
    seed_y: torch.Tensor | None,
    peer_probs: list[torch.Tensor],
    lam: float,
    temperature: float,
) -> torch.Tensor:
    """CE on a seed batch + lam * T^2 * peer KL on it (the seed-set part of the loss)."""
    if seed_x is None or seed_y is None:
        return torch.zeros(())
    logits = model(seed_x) if params is None else functional_call(model, params, (seed_x,))
    labelled = seed_y >= 0  # a public seed set is unlabelled (-1): only the peer term applies
    loss = (
        nn.functional.cross_entropy(logits[labelled], seed_y[labelled])
        if bool(labelled.any())
        else logits.sum() * 0.0
    )
    if peer_probs and lam > 0:
        loss = loss + lam * temperature**2 * peer_kl(logits, peer_probs, temperature)
    return loss


Loss = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def cosine_bonus_grads(
    local_fn: Loss, seed_fn: Loss, params: Mapping[str, torch.Tensor], step: float = 1e-2
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """First-order gradients for ``align=fo-cos``: (g_local, g_seed, d cos / d theta).

    The gradient of cos(g_l, g_s) (norms held fixed) is (H_l g_s + H_s g_l) / (|g_l| |g_s|);
    both Hessian-vector products are approximated by finite differences of gradients, so the
    variant needs gradients only (two extra backward passes), no second derivatives.
    """

    def grad_at(fn: Loss, point: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        leaves = {k: v.detach().requires_grad_() for k, v in point.items()}
        return list(torch.autograd.grad(fn(leaves), list(leaves.values())))

    def norm(g: list[torch.Tensor]) -> torch.Tensor:
        return torch.sqrt(sum((x * x).sum() for x in g)) + 1e-12  # type: ignore[arg-type]

    def shifted(direction: list[torch.Tensor], size: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            k: p.detach() + step * d / size
            for (k, p), d in zip(params.items(), direction, strict=True)
        }

    g_l, g_s = grad_at(local_fn, params), grad_at(seed_fn, params)
    n_l, n_s = norm(g_l), norm(g_s)
    hs_gl = [
        (a - b) * n_l / step for a, b in zip(grad_at(seed_fn, shifted(g_l, n_l)), g_s, strict=True)
    ]
    hl_gs = [
        (a - b) * n_s / step for a, b in zip(grad_at(local_fn, shifted(g_s, n_s)), g_l, strict=True)
    ]
    bonus = [(a + b) / (n_l * n_s) for a, b in zip(hl_gs, hs_gl, strict=True)]
    return g_l, g_s, bonus


def _set_mldg_grads(
    model: nn.Module,
    local_loss: torch.Tensor,
    seed_batch: tuple[torch.Tensor, torch.Tensor | None],
    peers: list[torch.Tensor],
    lam: float,
    temperature: float,
    lr: float,
) -> torch.Tensor:
    """First-order MLDG: the seed objective at the weights after a virtual SGD step on the
    local batch; sets both gradients' sum as ``.grad`` and returns the seed loss."""
    params = dict(model.named_parameters())
    g_local = torch.autograd.grad(local_loss, list(params.values()))
    stepped = {
        k: (p - lr * g).detach().requires_grad_()
        for (k, p), g in zip(params.items(), g_local, strict=True)
    }
    s_x, s_y = seed_batch
    seed_loss = h2l_objective(
        model, {**stepped, **dict(model.named_buffers())}, s_x, s_y, peers, lam, temperature
    )
    g_seed = torch.autograd.grad(seed_loss, list(stepped.values()))
    for p, a, b in zip(params.values(), g_local, g_seed, strict=True):
        p.grad = a + b
    return seed_loss


def _set_fo_cos_grads(
    model: nn.Module,
    local: tuple[torch.Tensor, torch.Tensor],
    seed: tuple[torch.Tensor, torch.Tensor],
    peer_batch: list[torch.Tensor],
    lam: float,
    temperature: float,
    weight: float,
) -> None:
    """Write g_local + g_seed - weight * d cos(g_local, g_seed) into the parameters' grads."""
    buffers = dict(model.named_buffers())
    params = dict(model.named_parameters())

    def local_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(
            functional_call(model, {**p, **buffers}, (local[0],)), local[1]
        )

    def seed_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return h2l_objective(
            model, {**p, **buffers}, seed[0], seed[1], peer_batch, lam, temperature
        )

    g_l, g_s, bonus = cosine_bonus_grads(local_fn, seed_fn, params)
    # d cos / d theta is unbounded when a gradient is near zero (a well-fit seed set); clip its
    # norm to that of the loss gradient so the bonus can steer the step but never dominate it.
    base = torch.stack([((a + b) ** 2).sum() for a, b in zip(g_l, g_s, strict=True)]).sum().sqrt()
    size = torch.stack([(c * c).sum() for c in bonus]).sum().sqrt() + 1e-12
    bonus = [c * torch.clamp(base / size, max=1.0) for c in bonus]
    for p, a, b, c in zip(params.values(), g_l, g_s, bonus, strict=True):
        p.grad = a + b - weight * c  # descend both losses, ascend their gradients' cosine


def train_h2l(content: RecordDict, node_config: dict[str, Any], state: RecordDict) -> RecordDict:
    """One FedH2L round on this node; returns posteriors on the seed set and metrics."""
    config: dict[str, Any] = dict(content["config"])  # type: ignore[arg-type]
    node = load_node(config, node_config)
    device = resolve_device(node.device)
    train, local_test = local_split(node, int(config["data.seed"]))
    model = restore_model(node, state, int(config["data.seed"]), MODEL_STATE_KEY)
    seed = _seed_set(content, state, int(config["seed-per-class"]))
    peers = _peer_matrices(content, node.num_classes)
    cfg = TrainConfig.from_config(config)
    gen = seeded_generator(int(config["data.seed"]), int(config["server-round"]), node.partition_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        loss = _train(model, train, seed, peers, cfg, config, gen, device)
    keep_model(model, state, MODEL_STATE_KEY)
    metrics = {
        "num-examples": len(train),
        "partition-id": node.partition_id,
        "train-loss": loss,
        **scores(model, node, local_test, config, device),
    }
    posteriors = None
    if seed is not None:
        temperature = float(config["h2l-temperature"])
        logits = predict_logits(model, seed.x, device)
        probs = torch.softmax(logits / temperature, dim=1).numpy()
        arrays, rows_sent = posterior_arrays(probs, config, state)
        posteriors = arrays_to_record(arrays)
        if float(config.get("posterior-delta", 0.0)) > 0:
            metrics["posterior-rows-sent"] = rows_sent
    reply = RecordDict({"metrics": MetricRecord(dict(metrics))})
    if posteriors is not None:
        reply[POSTERIORS_KEY] = posteriors
    return reply


def posterior_arrays(
    probs: np.ndarray, config: Mapping[str, Any], state: RecordDict
) -> tuple[dict[str, np.ndarray], int]:
    """The posteriors to send and how many rows they carry.

    With ``posterior-delta`` > 0, only the rows that moved by more than it since the matrix
    the server holds from this node: the server names that matrix's round
    (``posterior-held-round``), and the node sends its changed rows when it kept the same
    round's matrix (as the server decoded it), else the whole matrix. Both sides then hold the
    same matrix bit for bit, whatever the encoding.
    """
    code = str(config["posterior-dtype"])
    num_classes = probs.shape[1]
    tolerance = float(config.get("posterior-delta", 0.0))
    if tolerance <= 0:
        return encode("p", probs, code), len(probs)
    held_round = int(config.get("posterior-held-round", 0))
    sent = state.get(SENT_STATE_KEY)
    if isinstance(sent, ArrayRecord) and int(sent["round"].numpy()[0]) == held_round > 0:
        held = sent["p"].numpy()
        rows = changed_rows(probs, held, tolerance)
        if len(rows) < len(probs) and held.shape == probs.shape:
            arrays = encode_update("p", probs, code, rows)
            now = held.copy()
            now[rows] = decode(encode("p", probs[rows], code), "p", num_classes)
            _keep_sent(state, now, int(config["server-round"]))
            return arrays, len(rows)
    arrays = encode("p", probs, code)
    _keep_sent(state, decode(arrays, "p", num_classes), int(config["server-round"]))
    return arrays, len(probs)


def _keep_sent(state: RecordDict, p: np.ndarray, server_round: int) -> None:
    state[SENT_STATE_KEY] = arrays_to_record(
        {"p": p.astype(np.float32), "round": np.array([server_round], dtype=np.int64)}
    )


def _seed_set(content: RecordDict, state: RecordDict, per_class: int) -> ArrayDataset | None:
    if per_class == 0:
        return None
    if SEED_SET_KEY in content:
        state[SEED_STATE_KEY] = content[SEED_SET_KEY]
    if SEED_STATE_KEY not in state:
        raise NodeError(
            ErrorCode.SEED_SET_MISSING,
            "seed set missing on this node (restarted?); the server re-sends it",
        )
    record = state[SEED_STATE_KEY]
    assert isinstance(record, ArrayRecord)
    return ArrayDataset(record["x"].numpy(), record["y"].numpy().astype(np.int64))


def _peer_matrices(content: RecordDict, num_classes: int) -> list[np.ndarray]:
    """The peers' posteriors (``mean`` or ``peer-<partition>``), decoded."""
    if PEERS_KEY not in content:
        return []
    record = content[PEERS_KEY]
    assert isinstance(record, ArrayRecord)
    arrays = {k: record[k].numpy() for k in record}
    names = dict.fromkeys(k.split(".", 1)[0] for k in arrays)  # in the record's order
    return [decode(arrays, name, num_classes) for name in names]


def _train(
    model: nn.Module,
    train: ArrayDataset,
    seed: ArrayDataset | None,
    peers: list[np.ndarray],
    cfg: TrainConfig,
    config: dict[str, Any],
    gen: torch.Generator,
    device: torch.device,
) -> float:
    """CE(local) + CE(seed) + lam T^2 KL(peers || self) on seed inputs, SGD with momentum.

    ``align=mldg``: first-order MLDG -- the seed objective is evaluated at the weights after a
    virtual SGD step on the local batch, and both gradients are summed (a reconstruction).
    ``align=fo-cos``: both gradients plus ``align-weight`` times the (finite-difference) gradient
    of the cosine between them, rewarding steps on which local and seed-set data agree.
    """
    model.to(device).train()
    if len(train) == 0:
        return 0.0
    lam, temperature = float(config["h2l-lambda"]), float(config["h2l-temperature"])
    align = str(config["align"])
    max_norm = float(config["h2l-max-grad-norm"])
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    xs, ys = images_to_tensor(train.x), torch.from_numpy(train.y)
    sx = images_to_tensor(seed.x) if seed is not None else None
    sy = torch.from_numpy(seed.y) if seed is not None else None
    peer_t = [torch.from_numpy(p) for p in peers]
    seed_batches = (
        batch_indices(len(seed), cfg.batch_size, 10**9, gen) if seed is not None else None
    )
    losses = []
    for idx in batch_indices(len(train), cfg.batch_size, cfg.num_steps(len(train)), gen):
        if len(idx) < 2:
            continue
        local_loss = nn.functional.cross_entropy(model(xs[idx].to(device)), ys[idx].to(device))
        s_idx = next(seed_batches) if seed_batches is not None else None
        s_x = sx[s_idx].to(device) if sx is not None and s_idx is not None else None
        s_y = sy[s_idx].to(device) if sy is not None and s_idx is not None else None
        peer_batch = [p[s_idx].to(device) for p in peer_t] if s_idx is not None else []
        opt.zero_grad()
        if align == "fo-cos" and s_x is not None and s_y is not None:
            xb, yb = xs[idx].to(device), ys[idx].to(device)
            _set_fo_cos_grads(
                model,
                (xb, yb),
                (s_x, s_y),
                peer_batch,
                lam,
                temperature,
                float(config["align-weight"]),
            )
            total = local_loss.detach()
        elif align == "mldg" and s_x is not None:
            seed_loss = _set_mldg_grads(
                model, local_loss, (s_x, s_y), peer_batch, lam, temperature, cfg.lr
            )
            total = local_loss.detach() + seed_loss.detach()
        else:
            seed_loss = h2l_objective(model, None, s_x, s_y, peer_batch, lam, temperature)
            total = local_loss + seed_loss
            total.backward()
        if max_norm > 0:
            clip_gradient(model, max_norm)
        opt.step()
        losses.append(float(total.detach()))
    return float(np.mean(losses)) if losses else 0.0
