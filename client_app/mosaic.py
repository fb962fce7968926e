"""Mosaic client: the local generator (trained once) and the prototype queries.

``train.generator`` trains an auxiliary classifier and a generator on the node's data and
replies the generator only, with a few confident synthetic prototypes per class. The
discriminator never leaves this function; the auxiliary classifier and the generator are kept
in the node's cache directory (``<cache>/generators``, keyed by data, seed and settings), so a
repeated request, a new process (deployment) or a later run with the same settings does not
train again. Synthetic images are never written to disk here.

``query.prototypes`` (the reference's faithful prototypes) replies per-class k-means centroids
of the received global model's penultimate features of local examples.

``query.evaluate`` (the client gate, ``mosaic-event-gate=clients``) replies how many of a seeded
sample of local examples each received candidate model classifies correctly: counts only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import MetricRecord, RecordDict

from federated_data.atomic import save_npz
from models.device import resolve_device
from models.experts import kmeans_prototypes, penultimate_features
from models.generators import Generator, GeneratorConfig, generate, to_uint8, train_gan
from models.interpolation import interpolate
from models.training import (
    TrainConfig,
    images_to_tensor,
    predict_logits,
    seeded_generator,
    train_classifier,
)
from models.zoo import build_model
from protocol import (
    ARRAYS_KEY,
    CANDIDATE_BLENDS,
    CANDIDATE_PREFIX,
    CONFIG_KEY,
    GENERATOR_KEY,
    METRICS_KEY,
    PROTOTYPES_KEY,
    array_record,
    arrays_to_record,
    blend_name,
    record_to_arrays,
)

from .local import node_model
from .node import NodeSetup, load_node

# The node's examples a feature-prototype query looks at (the reference used ~640).
PROTOTYPE_SAMPLES = 2000
# The node's examples a candidate check scores: bounded cost on big nodes (the server weights
# every node's accuracy by its example count, so the sample does not change the weighting).
CHECK_SAMPLES = 2000


def train_generator(content: RecordDict, node_config: dict[str, Any]) -> RecordDict:
    """Train (or load) this node's generator; reply it with synthetic prototypes."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    device = resolve_device(node.device)
    cfg = GeneratorConfig.from_config(config)
    seed = int(config["data.seed"])
    t0 = time.perf_counter()
    generator, aux, metrics = _cached_generator(config, node, cfg, seed, device)
    seconds = time.perf_counter() - t0
    proto_x, proto_y = synthetic_prototypes(
        generator,
        aux,
        node.label_counts(),
        per_class=int(config["prototypes-per-class"]),
        confidence=float(config["prototype-confidence"]),
        gen=seeded_generator(seed, node.partition_id, 0x9E0),
        device=device,
    )
    metrics.update(
        {
            "num-examples": len(node.data),
            "partition-id": node.partition_id,
            "generator-seconds": seconds,  # this request: training, or loading the cache
            "num-prototypes": len(proto_y),
        }
    )
    state = {k: v.detach().cpu().numpy() for k, v in generator.state_dict().items()}
    return RecordDict(
        {
            GENERATOR_KEY: arrays_to_record(state),
            PROTOTYPES_KEY: arrays_to_record({"x": proto_x, "y": proto_y}),
            METRICS_KEY: MetricRecord(metrics),  # type: ignore[arg-type]
        }
    )


def feature_prototypes(content: RecordDict, node_config: dict[str, Any]) -> RecordDict:
    """k-means centroids (per class, clusters of >= ``prototype-min-cluster`` examples) of the
    received global model's penultimate features of up to 2,000 local examples."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    model = node_model(node, array_record(content, ARRAYS_KEY))
    seed = int(config["data.seed"])
    rng = np.random.default_rng([seed, node.partition_id, 0x9E1])
    n = len(node.data)
    pick = np.sort(rng.choice(n, size=min(n, PROTOTYPE_SAMPLES), replace=False))
    feats = penultimate_features(model, images_to_tensor(node.data.x[pick]))
    x, y = kmeans_prototypes(
        feats.numpy(),
        node.data.y[pick],
        per_class=int(config["prototypes-per-class"]),
        min_cluster=int(config["prototype-min-cluster"]),
        seed=seed + node.partition_id,
    )
    metrics = {"num-examples": n, "num-prototypes": len(y)}
    return RecordDict(
        {
            PROTOTYPES_KEY: arrays_to_record({"x": x, "y": y}),
            METRICS_KEY: MetricRecord(metrics),  # type: ignore[arg-type]
        }
    )


def score_candidates(content: RecordDict, node_config: dict[str, Any]) -> RecordDict:
    """Correct predictions of every ``candidate/<name>/<architecture>`` model, and of the
    blends of ``pre`` and ``post`` the config lists (``candidate-blends``, built here so that
    they cost no bytes), on a seeded sample of up to 2,000 local examples (the same sample for
    every candidate)."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    device = resolve_device(node.device)
    rng = np.random.default_rng([int(config["data.seed"]), node.partition_id, 0xC4E])
    n = len(node.data)
    pick = np.sort(rng.choice(n, size=min(n, CHECK_SAMPLES), replace=False))
    x, y = node.data.x[pick], node.data.y[pick]
    metrics: dict[str, int] = {"num-examples": n, "evaluated": len(pick)}
    candidates = {
        key.removeprefix(CANDIDATE_PREFIX): record_to_arrays(array_record(content, key))
        for key in content.array_records
        if key.startswith(CANDIDATE_PREFIX)
    }
    for weight in config.get(CANDIDATE_BLENDS, []):
        for arch in [n.removeprefix("pre/") for n in candidates if n.startswith("pre/")]:
            pre, post = candidates[f"pre/{arch}"], candidates.get(f"post/{arch}")
            if post is not None:
                blended = interpolate(pre, post, float(weight))
                candidates[f"{blend_name(float(weight))}/{arch}"] = blended
    for name, arrays in candidates.items():
        model = build_model(name.rsplit("/", 1)[-1], node.input_shape, node.num_classes)
        model.load_state_dict({k: torch.tensor(v) for k, v in arrays.items()})
        correct = (predict_logits(model, x, device).argmax(1).numpy() == y).sum() if n else 0
        metrics[f"correct/{name}"] = int(correct)
    return RecordDict({METRICS_KEY: MetricRecord(metrics)})  # type: ignore[arg-type]


def synthetic_prototypes(
    generator: Generator,
    aux: torch.nn.Module,
    label_counts: list[int],
    *,
    per_class: int,
    confidence: float,
    gen: torch.Generator,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` generated images per class the node holds, each kept only if the
    node's own (auxiliary) classifier gives that class at least ``confidence``; most
    confident first. Labels are the classifier's."""
    counts = np.asarray(label_counts, dtype=np.float64)
    held = np.flatnonzero(counts)
    candidates = 20 * per_class * max(len(held), 1)
    # A conditional generator is asked for the held classes equally, not by their frequency.
    prior = (counts > 0).astype(np.float64)
    images, _ = generate(generator, candidates, gen, prior=prior, device=device)
    x = to_uint8(images)
    probs = predict_logits(aux, x, device).softmax(1)
    conf, pred = probs.max(1)
    keep: list[int] = []
    for c in held:
        ok = torch.nonzero((pred == int(c)) & (conf >= confidence)).flatten()
        keep += ok[conf[ok].argsort(descending=True)][:per_class].tolist()
    keep.sort()
    return x[keep], pred[keep].numpy().astype(np.int64)


def _cached_generator(
    config: dict[str, Any],
    node: NodeSetup,
    cfg: GeneratorConfig,
    seed: int,
    device: torch.device,
) -> tuple[Generator, torch.nn.Module, dict[str, float]]:
    """The node's generator and auxiliary classifier, from its cache or trained now."""
    aux_arch = str(config["generator-aux-model"])
    aux_cfg = TrainConfig.from_config(config)
    aux_cfg.steps = int(config["generator-aux-steps"])
    aux_cfg.epochs = 0
    key = {
        "data": node.data_key,
        "indices": hashlib.sha256(np.ascontiguousarray(node.indices).tobytes()).hexdigest(),
        "seed": seed,
        "partition": node.partition_id,
        "generator": cfg.__dict__,
        "aux": [aux_arch, aux_cfg.__dict__],
        "torch": torch.__version__,
        "init": "seeded",  # cached before the auxiliary classifier's init was seeded: retrain
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = node.cache_dir / "generators" / f"{digest}.npz"
    generator = Generator(node.input_shape, node.num_classes, cfg)
    aux = build_model(aux_arch, node.input_shape, node.num_classes)
    loaded = _load(path, generator, aux)
    if loaded is not None:
        return generator, aux, {**loaded, "generator-cached": 1}
    gen = seeded_generator(seed, node.partition_id, 0x6A7)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        aux = build_model(aux_arch, node.input_shape, node.num_classes)  # seeded initial weights
        train_classifier(aux, node.data.x, node.data.y, aux_cfg, gen, device)
        generator, metrics = train_gan(
            node.data.x, node.data.y, node.num_classes, cfg, aux, gen, device
        )
    # Kept with the cache: a later run that loads it still reports what training cost.
    metrics["generator-train-seconds"] = time.perf_counter() - t0
    _save(path, generator, aux, metrics)
    return generator, aux.cpu(), {**metrics, "generator-cached": 0}


def _save(
    path: Path, generator: Generator, aux: torch.nn.Module, metrics: dict[str, float]
) -> None:
    arrays = {f"g/{k}": v.cpu().numpy() for k, v in generator.state_dict().items()}
    arrays.update({f"a/{k}": v.cpu().numpy() for k, v in aux.state_dict().items()})
    meta = np.frombuffer(json.dumps(metrics).encode(), dtype=np.uint8)
    save_npz(path, __meta__=meta, **arrays)  # a concurrent reader sees old or whole new


def _load(path: Path, generator: Generator, aux: torch.nn.Module) -> dict[str, float] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            g = {k[2:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("g/")}
            a = {k[2:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("a/")}
            metrics = json.loads(z["__meta__"].tobytes().decode())
        generator.load_state_dict(g)
        aux.load_state_dict(a)
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError):
        return None  # unreadable or from other code: train again and overwrite
    return {str(k): float(v) for k, v in metrics.items()}
