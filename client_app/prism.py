"""PRISM on a node: train the scores of the shared random generator with an MMD loss and reply
one sampled binary mask, bit-packed; and the dense FedAvg baseline with the same loss.

What survives between rounds lives in ``context.state`` (run-scoped, kept by the SuperNode
across the fresh processes of a deployment): the Adam state of the scores (or weights) and the
moment-matching trackers with their Adam state. The real feature statistics are computed once
per node and cached on its disk (``<cache>/prism-statistics``); with DP the released, noisy
statistics are derived from them with a seeded draw, so every round reuses the same release.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import MetricRecord, RecordDict
from torch import nn

from federated_data.atomic import save_npz
from models.device import resolve_device
from models.mask_coding import encode, frequencies_from_scores, frequencies_from_theta
from models.masked import (
    GeneratorSpec,
    MaskedGenerator,
    flat,
    get_layer_arrays,
    masked_layers,
    pack_mask,
    set_layer_arrays,
)
from models.mmd import (
    MomentMatching,
    PixelMMD,
    feature_map,
    privatise_statistics,
    real_statistics,
    statistics_cache_path,
    to_generator_size,
)
from models.training import images_to_tensor, seeded_generator
from protocol import (
    ARRAYS_KEY,
    CODED_MASK,
    CONFIG_KEY,
    MASK_KEY,
    METRICS_KEY,
    SCORES_KEY,
    THETA_KEY,
    array_record,
    arrays_to_record,
    logit,
    record_to_arrays,
)

from .node import NodeSetup, load_node

STATE_KEY = "prism-state"  # context.state: optimizer and tracker state


def generator_spec(config: Mapping[str, Any], channels: int, *, dense: bool) -> GeneratorSpec:
    return GeneratorSpec(
        channels=channels,
        size=str(config["prism-generator"]),
        seed=int(config["prism-weights-seed"]),
        dense=dense,
    )


def train_mask(content: RecordDict, node_config: dict[str, Any], state: RecordDict) -> RecordDict:
    """One PRISM round: scores from the server, local MMD training, one sampled mask back."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    model = generator_spec(config, node.input_shape[0], dense=False).build()
    if THETA_KEY in content:
        probs = record_to_arrays(array_record(content, THETA_KEY))
        freq1 = frequencies_from_theta(flat(probs, model))
        eps = 1e-6  # float16 rounds extreme probabilities to 0 or 1
        set_layer_arrays(
            model,
            "scores",
            {k: logit(np.clip(v.astype(np.float64), eps, 1 - eps)) for k, v in probs.items()},
        )
    else:
        scores = record_to_arrays(array_record(content, SCORES_KEY))
        freq1 = frequencies_from_scores(flat(scores, model))
        set_layer_arrays(model, "scores", scores)
    theta_sent = _theta(model)
    params = [layer.scores for _, layer in masked_layers(model)]
    metrics, gen = _train(model, params, node, config, state)
    theta = _theta(model)
    with torch.no_grad():
        bits = torch.bernoulli(theta, generator=gen).to(torch.uint8).numpy()
    metrics["mask-density"] = float(bits.mean())
    # How far one round of local training moved the probabilities from the global ones.
    metrics["theta-drift"] = float((theta - theta_sent).abs().mean())
    name, array = _smallest_mask(bits, freq1 if config["prism-uplink"] == "coded" else None)
    return RecordDict(
        {
            MASK_KEY: arrays_to_record({name: array}),
            METRICS_KEY: MetricRecord(metrics),
        }
    )


def _theta(model: MaskedGenerator) -> torch.Tensor:
    """The keep probabilities of every masked weight, flat in mask order."""
    return torch.sigmoid(torch.from_numpy(flat(get_layer_arrays(model, "scores"), model)))


def _smallest_mask(bits: np.ndarray, freq1: np.ndarray | None) -> tuple[str, np.ndarray]:
    """The mask entropy-coded under the global probabilities when that is smaller than one
    bit per weight (it is unless they sit at 1/2), else bit-packed."""
    packed = pack_mask(bits)
    if freq1 is None:
        return MASK_KEY, packed
    coded = encode(bits, freq1)
    return (CODED_MASK, coded) if coded.nbytes < packed.nbytes else (MASK_KEY, packed)


def train_dense(content: RecordDict, node_config: dict[str, Any], state: RecordDict) -> RecordDict:
    """The baseline: the same generator with dense trainable weights, same loss, FedAvg."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    model = generator_spec(config, node.input_shape[0], dense=True).build()
    set_layer_arrays(model, "weight", record_to_arrays(array_record(content, ARRAYS_KEY)))
    params = [layer.weight for _, layer in masked_layers(model)]
    metrics, _ = _train(model, params, node, config, state)
    return RecordDict(
        {
            ARRAYS_KEY: arrays_to_record(get_layer_arrays(model, "weight")),
            METRICS_KEY: MetricRecord(metrics),
        }
    )


def _train(
    model: MaskedGenerator,
    params: Sequence[torch.Tensor],
    node: NodeSetup,
    config: dict[str, Any],
    state: RecordDict,
) -> tuple[dict[str, Any], torch.Generator]:
    """``local-steps`` Adam steps on ``params`` (lr, betas (0.5, 0.999)) against the node's
    loss; optimizer and tracker state restored from and saved to ``state``."""
    if len(node.data) < 2:
        raise ValueError(
            f"partition {node.partition_id} has {len(node.data)} examples; PRISM needs >= 2"
        )
    t0 = time.time()
    seed, server_round = int(config["data.seed"]), int(config["server-round"])
    gen = seeded_generator(seed, server_round, node.partition_id, 0x9A)
    device = resolve_device(node.device)
    # Modules move in place, so the optimizers keep their parameters; saved optimizer state
    # is cast to the parameters' device when it is loaded below.
    model.to(device)
    loss_fn = _loss(node, config, gen).to(device)
    optimizer = torch.optim.Adam(params, lr=float(config["lr"]), betas=(0.5, 0.999))
    saved = record_to_arrays(state[STATE_KEY]) if STATE_KEY in state else {}  # type: ignore[arg-type]
    _load_optimizer(optimizer, saved, "g")
    if isinstance(loss_fn, MomentMatching):
        _load_trackers(loss_fn, saved)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        losses = local_steps(
            model, loss_fn, optimizer, int(config["local-steps"]), int(config["batch-size"])
        )
    arrays = _optimizer_arrays(optimizer, "g")
    if isinstance(loss_fn, MomentMatching):
        arrays.update(_tracker_arrays(loss_fn))
    state[STATE_KEY] = arrays_to_record(arrays)
    model.cpu()
    metrics: dict[str, Any] = {
        "num-examples": len(node.data),
        "partition-id": node.partition_id,
        "train-loss": float(losses.mean()) if len(losses) else 0.0,
        "seconds-train": round(time.time() - t0, 3),
    }
    return metrics, gen


def local_steps(
    model: MaskedGenerator,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch: int,
) -> torch.Tensor:
    """``steps`` optimizer steps of the generator against ``loss_fn`` on noise batches; the
    losses, on the model's device (one sync at the end, not one per step)."""
    device = next(model.parameters()).device
    losses = []
    model.train()
    for _ in range(steps):
        # the noise is drawn on the CPU: the same z on every device
        fake = model(torch.randn(batch, 128).to(device))
        loss = loss_fn(fake)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses) if losses else torch.zeros(0)


def _loss(node: NodeSetup, config: dict[str, Any], gen: torch.Generator) -> nn.Module:
    kind = str(config["prism-loss"])
    if kind == "pixel-mmd":
        real = to_generator_size(images_to_tensor(node.data.x))
        return PixelMMD(real, sampler=lambda n: torch.randint(0, len(real), (n,), generator=gen))
    phi = feature_map(kind)
    # With DP every feature vector is clipped (real and generated alike) and the real
    # statistics are released once with Gaussian noise, seeded so every round reuses them.
    clip = float(config["prism-dp-clip"]) if float(config["prism-dp-noise"]) > 0 else 0.0
    mean, var, n = _statistics(node, phi, clip)
    if clip:
        mean, var = privatise_statistics(
            mean,
            var,
            n,
            clip=clip,
            noise_multiplier=float(config["prism-dp-noise"]),
            rng=np.random.default_rng([int(config["data.seed"]), node.partition_id, 0xD9]),
        )
    return MomentMatching(phi, mean, var, lr=float(config["prism-tracker-lr"]), clip=clip)


def _statistics(node: NodeSetup, phi: nn.Module, clip: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The node's real feature statistics, from its disk cache when present."""
    assert node.indices is not None
    key = {
        "data": node.data_key,
        "indices": hashlib.sha256(np.ascontiguousarray(node.indices).tobytes()).hexdigest()[:16],
        "features": getattr(phi, "id", type(phi).__name__),
        "clip": clip,
        "torch": torch.__version__.split("+")[0],
    }
    path = statistics_cache_path(node.cache_dir, key)
    if path.exists():
        try:
            with np.load(path) as z:
                return z["mean"], z["var"], int(z["n"])
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: recompute below
    mean, var, n = real_statistics(phi, node.data.x, clip=clip)
    save_npz(path, mean=mean, var=var, n=np.int64(n))
    return mean, var, n


def _optimizer_arrays(opt: torch.optim.Optimizer, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for i, s in opt.state_dict()["state"].items():
        for name, value in s.items():
            out[f"{prefix}/{i}/{name}"] = torch.as_tensor(value).detach().cpu().numpy().copy()
    return out


def _load_optimizer(opt: torch.optim.Optimizer, arrays: dict[str, np.ndarray], prefix: str) -> None:
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == prefix:
            per_param.setdefault(int(parts[1]), {})[parts[2]] = torch.from_numpy(np.array(value))
    if per_param:
        sd = opt.state_dict()
        sd["state"] = per_param
        opt.load_state_dict(sd)


def _tracker_arrays(mm: MomentMatching) -> dict[str, np.ndarray]:
    return {
        "t/mean": mm.track_mean.detach().cpu().numpy().copy(),
        "t/var": mm.track_var.detach().cpu().numpy().copy(),
        **_optimizer_arrays(mm.optimizer, "ta"),
    }


def _load_trackers(mm: MomentMatching, arrays: dict[str, np.ndarray]) -> None:
    if "t/mean" in arrays and len(arrays["t/mean"]) == len(mm.track_mean):
        with torch.no_grad():
            mm.track_mean.copy_(torch.from_numpy(np.array(arrays["t/mean"])))
            mm.track_var.copy_(torch.from_numpy(np.array(arrays["t/var"])))
        _load_optimizer(mm.optimizer, arrays, "ta")
