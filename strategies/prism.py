"""PRISM [Seo et al., ICLR 2025, arXiv:2503.08085]: federated generative models through
stochastic binary masks over a frozen random network, aggregated with MADA.

Every round each client trains the scores of the shared random generator with an MMD loss and
uploads one sampled binary mask, bit-packed (1 bit per weight). The server smooths every bit
(0 -> 0.01, 1 -> 0.99: FedPM's Beta(1, 1) aggregation with the prior reset each round),
averages them into ``theta_agg`` and blends with its previous scores by the mask-aware
dynamic moving average (MADA): sample one mask from the previous global scores and one from
``theta_agg``; with ``d`` their normalised Hamming distance,

* ``mada`` (the reference code, default): ``s' = d * logit(theta_agg) + (1 - d) * s``;
* ``mada-probability`` (the paper's figure): ``theta' = (1 - d) * sigmoid(s) + d * theta_agg``;
* ``mean`` (PRISM without MADA, the ablation): ``s' = logit(theta_agg)``.

:class:`FedAvgGenerator` is the baseline: the same generator with dense trainable weights and
the same loss, averaged by FedAvg.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from federated_data import ArrayDataset, Federation
from models.fid import InceptionFeatures
from models.generators import to_uint8
from models.image_quality import FeatureJudge, frechet_distance, train_judge
from models.mask_coding import decode, frequencies_from_scores, frequencies_from_theta
from models.masked import (
    GENERATOR_SIZES,
    Z_DIM,
    GeneratorSpec,
    MaskedGenerator,
    export_generator,
    final_mask,
    flat,
    get_layer_arrays,
    num_masked,
    set_fixed_mask,
    set_layer_arrays,
    unflat,
    unpack_mask,
)
from models.mmd import PRISM_LOSSES, gaussian_epsilon, noise_for_epsilon, to_generator_size
from models.training import images_to_tensor, seeded_generator
from models.zoo import count_flops
from protocol import (
    ARRAYS_KEY,
    CODED_MASK,
    CONFIG_KEY,
    MASK_KEY,
    METRICS_KEY,
    SCORES_KEY,
    THETA_KEY,
    TRAIN_DENSE_GENERATOR,
    TRAIN_MASK,
    arrays_to_record,
    logit,
)
from protocol.settings import ConfigError, Section, Setting

from .aggregate import weighted_average
from .base import FederatedStrategy, RoundReport, require_choice
from .state import Arrays, ServerState
from .validation import InvalidReply, check_num_examples, check_train_reply

AGGREGATIONS = ("mada", "mada-probability", "mean")
DOWNLINKS = ("scores", "theta-float16")
UPLINKS = ("coded", "packed")
FINAL_MASKS = ("sample", "threshold")

PRISM_SETTINGS = Section(
    "prism",
    (
        Setting(
            "prism-generator",
            "small",
            "the masked generator: the paper's (full) or a quarter-width one",
            choices=tuple(GENERATOR_SIZES),
            travel="method",
        ),
        Setting(
            "prism-loss",
            "efficientnet-lite0",
            "moment matching of EfficientNet-Lite0 features, or pixel-space MMD",
            choices=PRISM_LOSSES,
            travel="method",
        ),
        Setting(
            "prism-tracker-lr",
            1e-05,
            "learning rate of the moment trackers",
            low=0.0,
            low_open=True,
            travel="method",
        ),
        Setting(
            "prism-aggregation",
            "mada",
            "MADA (the reference code's), its probability-"
            "space variant, or the plain mean (no-MADA ablation)",
            choices=AGGREGATIONS,
        ),
        Setting(
            "prism-downlink",
            "scores",
            "float32 scores or float16 probabilities down",
            choices=DOWNLINKS,
        ),
        Setting(
            "prism-uplink",
            "coded",
            "the mask up: entropy-coded under the global probabilities (falls back to the "
            "packing when that is not smaller) or bit-packed, 1 bit per weight (the paper's x8)",
            choices=UPLINKS,
            travel="method",
        ),
        Setting(
            "prism-final-mask",
            "sample",
            "the exported mask: one seeded sample or theta > 0.5",
            choices=FINAL_MASKS,
        ),
        Setting(
            "prism-dp-epsilon",
            0.0,
            "DP epsilon of the clients' feature statistics (0 = no DP)",
            low=0.0,
        ),
        Setting("prism-dp-delta", 1e-05, "DP delta", low=0.0, high=1.0, low_open=True),
        Setting(
            "prism-dp-clip",
            1.0,
            "L2 clip of every feature vector under DP",
            low=0.0,
            low_open=True,
            travel="method",
        ),
        Setting(
            "prism-density-bound",
            0.0,
            "drop a mask whose share of ones differs from the density the sent scores expect "
            "by more than this (0 = off, the paper; a defence against all-ones/all-zeros masks)",
            low=0.0,
            high=1.0,
        ),
        Setting("prism-eval-samples", 2000, "generated images scored per evaluation", low=10),
        Setting(
            "prism-sample-every",
            5,
            "save a sample grid every k rounds (0 = first and last only)",
            low=0,
        ),
        Setting("prism-judge-steps", 2000, "training steps of the feature judge", low=1),
        Setting(
            "prism-fid",
            False,
            "also report torchvision Inception FID (needs the vision extra and weights)",
        ),
    ),
    "PRISM and its dense FedAvg-generator baseline.",
)
SMOOTHING = (0.01, 0.99)  # a received 0 counts as 0.01, a 1 as 0.99


def smoothed_mean(bits: np.ndarray) -> np.ndarray:
    """theta_agg from a (clients, weights) 0/1 matrix, each bit smoothed to 0.01 / 0.99."""
    low, high = SMOOTHING
    return (low + (high - low) * bits.astype(np.float64)).mean(0)


def sigmoid(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-s))


# Per-round means of the replies' metrics (uplink bits per weight is measured by the server).
REPLY_METRICS = (
    "train-loss",
    "mask-density",
    "seconds-train",
    "theta-drift",
    "uplink-bits-per-weight",
)


def dynamics(theta_agg: np.ndarray, new_scores: np.ndarray) -> dict[str, float]:
    """How far the masks have moved: the mean of the clients' smoothed average, and of the new
    global probabilities with the shares of weights that are nearly decided (< 0.1, > 0.9)."""
    theta = sigmoid(new_scores.astype(np.float64))
    return {
        "theta-mean": float(theta_agg.mean()),
        "global-theta-mean": float(theta.mean()),
        "theta-low-share": float(np.mean(theta < 0.1)),
        "theta-high-share": float(np.mean(theta > 0.9)),
    }


def aggregate_scores(
    previous: np.ndarray, theta_agg: np.ndarray, how: str, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """New global scores from the previous ones and ``theta_agg``; returns (scores, d_H)
    (d_H is NaN for ``mean``, which does not sample)."""
    require_choice("prism-aggregation", how, AGGREGATIONS)
    if how == "mean":
        return logit(theta_agg).astype(np.float32), float("nan")
    theta_prev = sigmoid(previous.astype(np.float64))
    m_prev = rng.random(len(theta_prev)) < theta_prev
    m_agg = rng.random(len(theta_agg)) < theta_agg
    d = float(np.mean(m_prev != m_agg))
    if how == "mada":
        new = d * logit(theta_agg) + (1.0 - d) * previous
    else:
        new = logit(np.clip((1.0 - d) * theta_prev + d * theta_agg, 1e-7, 1 - 1e-7))
    return new.astype(np.float32), d


class GenerativeStrategy(FederatedStrategy):
    """Shared server side of PRISM and its dense baseline: the generator in the state,
    evaluation by the feature judge, sample grids and the final export.

    Parameters
    ----------
    channels : int
        Image channels of the data (the generator always draws 32x32).
    generator_size : str (default: "small")
        ``full`` (the paper's 3.54 M-weight network) or ``small``.
    judge : FeatureJudge
        Classifier trained on the real training set; its features score the samples.
    reference : ArrayDataset
        Real images the samples are compared with (the test split).
    floor_reference : np.ndarray | None
        Real training images for the real-vs-real floor of every metric.
    eval_samples : int (default: 2000)
        Generated (and real) images per evaluation.
    sample_every : int (default: 5)
        Rounds between saved sample grids (round 1 and the last round always).
    num_rounds : int (default: 1)
        Last round, for the final grid.
    dp : dict[str, Any] | None
        The DP release the clients make (noise multiplier, clip, epsilon, delta), reported.
    fid_features : Callable[[torch.Tensor], np.ndarray] | None
        Inception features (models.fid) for the real FID, reported as ``fid-torchvision``
        next to the judge's metrics; None (offline) skips it.
    """

    score_metric = "fd"
    higher_is_better = False
    dense = False  # trainable dense weights (the baseline) instead of masks over frozen ones

    def __init__(
        self,
        *,
        channels: int,
        judge: FeatureJudge,
        reference: ArrayDataset,
        floor_reference: np.ndarray | None = None,
        generator_size: str = "small",
        eval_samples: int = 2000,
        sample_every: int = 5,
        num_rounds: int = 1,
        dp: dict[str, Any] | None = None,
        fid_features: Callable[[torch.Tensor], np.ndarray] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dp = dp or {}
        self.channels = channels
        self.generator_size = generator_size
        self.judge = judge
        self.reference = reference
        self.floor_reference = floor_reference
        self.eval_samples = eval_samples
        self.sample_every = sample_every
        self.num_rounds = num_rounds
        self._images: dict[str, np.ndarray] = {}
        n = min(eval_samples, len(reference))
        pick = np.random.default_rng([self.seed, 0xE7]).choice(len(reference), n, replace=False)
        real = to_generator_size(images_to_tensor(reference.x[np.sort(pick)]))
        # The reference side of every metric is fixed: its features are computed once.
        self._real_features, _ = judge.features_and_labels(real)
        self._real_labels = reference.y
        self.fid_features = fid_features
        self._real_fid = fid_features(real) if fid_features else None
        self._template = self.spec().build()
        self.num_weights = num_masked(self._template)

    def spec(self) -> GeneratorSpec:
        return GeneratorSpec(self.channels, self.generator_size, self.seed, dense=self.dense)

    def generator(self, state: ServerState) -> MaskedGenerator:
        """The global generator as it would be deployed after ``state.round``."""
        raise NotImplementedError

    def evaluate(
        self, state: ServerState, test: ArrayDataset, device: torch.device
    ) -> dict[str, dict[str, float]]:
        model = self.generator(state).eval()
        gen = seeded_generator(self.seed, state.round, 0xE8)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            fake = torch.cat(
                [
                    model.sample(min(500, self.eval_samples - i))
                    for i in range(0, self.eval_samples, 500)
                ]
            )
        r = state.round
        if r == 1 or r == self.num_rounds or (self.sample_every and r % self.sample_every == 0):
            self._images["generator"] = to_uint8(fake[:64])
        return {"generator": self._score(fake)}

    def _score(self, images: torch.Tensor) -> dict[str, float]:
        """The judge's metrics of ``images`` against the real reference, and the real FID
        when Inception features are available."""
        scores = self.judge.score(images, self._real_features, self._real_labels, seed=self.seed)
        if self.fid_features is not None and self._real_fid is not None:
            scores["fid-torchvision"] = frechet_distance(self._real_fid, self.fid_features(images))
        return scores

    def model_costs(self, input_shape: tuple[int, int, int]) -> dict[str, dict[str, int]]:
        macs = count_flops(self._template, (Z_DIM,))
        return {f"generator-{self.generator_size}": {"parameters": self.num_weights, "macs": macs}}

    def take_images(self) -> dict[str, np.ndarray]:
        images, self._images = self._images, {}
        return images

    def real_floor(self) -> dict[str, float]:
        """Every metric for real training images against the same real test images."""
        if self.floor_reference is None:
            return {}
        n = min(len(self._real_features), len(self.floor_reference))
        pick = np.random.default_rng([self.seed, 0xF1]).choice(
            len(self.floor_reference), n, replace=False
        )
        real_train = to_generator_size(images_to_tensor(self.floor_reference[np.sort(pick)]))
        return self._score(real_train)


class PRISM(GenerativeStrategy):
    """PRISM: bit-packed sampled masks up, MADA on the server.

    Parameters
    ----------
    aggregation : str (default: "mada")
        ``mada`` (reference code), ``mada-probability`` (paper) or ``mean`` (no MADA).
    downlink : str (default: "scores")
        ``scores`` (float32) or ``theta-float16`` (probabilities, half the bytes).
    uplink : str (default: "coded")
        What the clients are asked to send: ``coded`` (rANS under the probabilities sent
        down, :mod:`models.mask_coding`; they fall back to packing when it is not smaller) or
        ``packed`` (1 bit per weight). Either form is accepted from any client.
    final_mask : str (default: "sample")
        How the exported (and evaluated) generator fixes its mask: one ``sample`` with the
        run's seed, or ``threshold`` (theta > 0.5).
    density_bound : float (default: 0.0)
        Drop a mask whose density is further than this from the mean of the sent theta (the
        density an honest client's sample has, up to one round of local training); 0 = off.
    """

    name = "prism"

    def __init__(
        self,
        *,
        aggregation: str = "mada",
        downlink: str = "scores",
        uplink: str = "coded",
        final_mask: str = "sample",
        density_bound: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.density_bound = density_bound
        self._expected_density = 0.5  # the mean theta of the scores sent this round
        self._coding_freq = np.zeros(0, dtype=np.uint32)  # what coded masks are decoded under
        self._uplink_bits: float | None = None  # mean uplink bits per weight, last round
        require_choice("prism-aggregation", aggregation, AGGREGATIONS)
        require_choice("prism-downlink", downlink, DOWNLINKS)
        require_choice("prism-uplink", uplink, UPLINKS)
        self.uplink = uplink
        require_choice("prism-final-mask", final_mask, FINAL_MASKS)
        self.aggregation = aggregation
        self.downlink = downlink
        self.final_mask = final_mask

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t│   ├── generator: %s, %d masked weights",
            self.generator_size,
            self.num_weights,
        )
        log(
            INFO,
            "\t│   ├── aggregation: %s, downlink: %s, uplink: %s",
            self.aggregation,
            self.downlink,
            self.uplink,
        )
        if self.dp:
            log(
                INFO, "\t│   └── DP: epsilon %.2f at delta %g", self.dp["epsilon"], self.dp["delta"]
            )

    def initial_state(self) -> ServerState:
        state = ServerState()
        state.data = {
            f"scores/{k}": v for k, v in get_layer_arrays(self._template, "scores").items()
        }
        return state

    def scores(self, state: ServerState) -> Arrays:
        return state.data_under("scores/")

    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        report = RoundReport()
        participants = self.select_participants(grid, server_round, report)
        scores = self.scores(state)
        previous = flat(scores, self._template)
        self._expected_density = float(sigmoid(previous).mean())
        if self.downlink == "scores":
            down = {SCORES_KEY: arrays_to_record(scores)}
            self._coding_freq = frequencies_from_scores(previous)
        else:
            theta16 = {k: sigmoid(v).astype(np.float16) for k, v in scores.items()}
            down = {THETA_KEY: arrays_to_record(theta16)}
            self._coding_freq = frequencies_from_theta(flat(theta16, self._template))
        config = ConfigRecord({**self.node_config, "server-round": server_round})
        payloads = {n: RecordDict({CONFIG_KEY: config, **down}) for n in participants}
        ex = self.phase(grid, payloads, TRAIN_MASK, server_round, self._parse_mask, report)
        report.num_ok = len(ex.replies)

        order = self.by_partition(ex.replies)
        bits = np.stack([ex.replies[n][0] for n in order])
        theta_agg = smoothed_mean(bits)
        rng = np.random.default_rng([self.seed, server_round, 0x3ADA])
        new, d = aggregate_scores(previous, theta_agg, self.aggregation, rng)
        for name, arr in unflat(new, self._template).items():
            state.data[f"scores/{name}"] = arr
        metrics = [m for _, m in ex.replies.values()]
        report.metrics = {
            k: float(np.mean([m[k] for m in metrics]))
            for k in REPLY_METRICS
            if all(k in m for m in metrics)
        }
        report.metrics.update(dynamics(theta_agg, new))
        self._uplink_bits = report.metrics.get("uplink-bits-per-weight")
        if not np.isnan(d):
            report.metrics["mada-hamming"] = d
        state.round = server_round
        return state, report

    def _parse_mask(self, reply: Message) -> tuple[np.ndarray, dict[str, float]]:
        content = reply.content
        if MASK_KEY not in content or METRICS_KEY not in content:
            raise InvalidReply(f"reply lacks '{MASK_KEY}' or '{METRICS_KEY}'")
        record = content[MASK_KEY]
        if not isinstance(record, ArrayRecord) or list(record.keys()) not in (
            [MASK_KEY],
            [CODED_MASK],
        ):
            raise InvalidReply(
                f"'{MASK_KEY}' must hold exactly one array, {MASK_KEY!r} (bit-packed) or "
                f"{CODED_MASK!r} (entropy-coded)"
            )
        (name,) = record.keys()
        array = record[name].numpy()
        try:
            if name == MASK_KEY:
                bits = unpack_mask(array, self.num_weights)
            else:
                bits = decode(array, self._coding_freq)
        except ValueError as err:
            raise InvalidReply(str(err)) from err
        density = float(bits.mean())
        if self.density_bound and abs(density - self._expected_density) > self.density_bound:
            raise InvalidReply(
                f"mask density {density:.3f} is more than prism-density-bound="
                f"{self.density_bound} from the expected {self._expected_density:.3f}"
            )
        check_num_examples(content[METRICS_KEY], self.known_examples(reply))
        metrics = {
            k: float(v) for k, v in content[METRICS_KEY].items() if isinstance(v, int | float)
        }  # type: ignore[union-attr]
        if not all(np.isfinite(list(metrics.values()))):
            raise InvalidReply("metrics hold NaN or Inf")
        # measured here, from what arrived, never taken from the node
        metrics["uplink-bits-per-weight"] = 8 * array.nbytes / self.num_weights
        return bits, metrics

    def fixed_mask(self, state: ServerState) -> np.ndarray:
        return final_mask(flat(self.scores(state), self._template), self.final_mask, self.seed)

    def generator(self, state: ServerState) -> MaskedGenerator:
        model = self.spec().build()
        set_layer_arrays(model, "scores", self.scores(state))
        set_fixed_mask(model, self.fixed_mask(state))
        return model

    def export(self, state: ServerState, directory: Path) -> dict[str, Any]:
        """The final sparse generator: seed + bit-packed fixed mask."""
        info = export_generator(directory / "generator.npz", self.spec(), self.fixed_mask(state))
        info["final-mask"] = self.final_mask
        return info

    def extra_summary(self, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        packed = (self.num_weights + 7) // 8
        return {
            "prism": {
                "generator": self.generator_size,
                "masked-weights": self.num_weights,
                "mask-bytes": packed,  # bit-packed (the fallback)
                "packed-bits-per-weight": 8 * packed / self.num_weights,
                "uplink-bits-per-weight": self._uplink_bits,  # measured, last round
                "aggregation": self.aggregation,
                "downlink": self.downlink,
                "uplink": self.uplink,
                "dp": self.dp,
                "real-floor": self.real_floor(),
            }
        }


class FedAvgGenerator(GenerativeStrategy):
    """The baseline: the same generator with dense weights, same loss, sample-weighted FedAvg."""

    name = "fedavg-generator"
    dense = True

    def initial_state(self) -> ServerState:
        return ServerState(models={"generator": get_layer_arrays(self._template, "weight")})

    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        report = RoundReport()
        participants = self.select_participants(grid, server_round, report)
        weights = state.models["generator"]
        config = ConfigRecord({**self.node_config, "server-round": server_round})
        content: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
            ARRAYS_KEY: arrays_to_record(weights),
            CONFIG_KEY: config,
        }
        payloads = {n: RecordDict(content) for n in participants}
        ex = self.phase(
            grid,
            payloads,
            TRAIN_DENSE_GENERATOR,
            server_round,
            lambda r: check_train_reply(r, weights, self.known_examples(r)),
            report,
        )
        report.num_ok = len(ex.replies)
        order = self.by_partition(ex.replies)
        counts = [ex.replies[n][1] for n in order]
        if sum(counts) > 0:
            state.models["generator"] = weighted_average([ex.replies[n][0] for n in order], counts)
        report.metrics = {
            k: float(np.mean([ex.replies[n][2][k] for n in order]))
            for k in ("train-loss", "seconds-train")
            if all(k in ex.replies[n][2] for n in order)
        }
        state.round = server_round
        return state, report

    def generator(self, state: ServerState) -> MaskedGenerator:
        model = self.spec().build()
        set_layer_arrays(model, "weight", state.models["generator"])
        return model

    def extra_summary(self, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        return {
            "prism": {
                "generator": self.generator_size,
                "dense-weights": self.num_weights,
                "weight-bytes": 4 * self.num_weights,
                "dp": self.dp,
                "real-floor": self.real_floor(),
            }
        }


def dp_noise(cfg: Any) -> float:
    """The noise multiplier that makes one release of a client's statistics
    (prism-dp-epsilon, prism-dp-delta)-DP; 0 without DP."""
    if not cfg.prism_dp_epsilon:
        return 0.0
    return float(noise_for_epsilon(cfg.prism_dp_epsilon, cfg.prism_dp_delta))


def node_extras(cfg: Any) -> dict[str, Any]:
    """What PRISM's clients need besides the settings: the seed their frozen weights regrow
    from and the DP noise multiplier."""
    return {"prism-weights-seed": cfg.seed, "prism-dp-noise": dp_noise(cfg)}


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> PRISM:
    return PRISM(
        aggregation=cfg.prism_aggregation,
        downlink=cfg.prism_downlink,
        uplink=cfg.prism_uplink,
        final_mask=cfg.prism_final_mask,
        density_bound=cfg.prism_density_bound,
        **generative_inputs(cfg, fed),
        **common,
    )


def build_dense(
    cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]
) -> FedAvgGenerator:
    return FedAvgGenerator(**generative_inputs(cfg, fed), **common)


def generative_inputs(cfg: Any, fed: Federation) -> dict[str, Any]:
    """PRISM's and its baseline's shared inputs, with the feature judge that scores samples."""
    source = fed.source
    t0 = time.time()
    judge, judge_info = train_judge(
        source.x_train,
        source.y_train,
        fed.input_shape,
        fed.num_classes,
        cache_dir=fed.cache_dir,
        data_key=fed.data_key("train"),
        steps=cfg.prism_judge_steps,
        seed=cfg.seed,
    )
    log(INFO, "Feature judge ready in %.1f s: %s", time.time() - t0, judge_info)
    inputs: dict[str, Any] = {
        "channels": fed.input_shape[0],
        "judge": judge,
        "reference": fed.test,
        "floor_reference": source.x_train[fed.pool],
        "generator_size": cfg.prism_generator,
        "eval_samples": cfg.prism_eval_samples,
        "sample_every": cfg.prism_sample_every,
        "num_rounds": cfg.num_server_rounds,
        # the real FID needs torchvision and Inception weights (internet once): opt-in
        "fid_features": InceptionFeatures(download=cfg.download) if cfg.prism_fid else None,
    }
    noise = dp_noise(cfg)
    if noise:
        inputs["dp"] = {
            "epsilon": gaussian_epsilon(noise, cfg.prism_dp_delta),
            "delta": cfg.prism_dp_delta,
            "noise-multiplier": noise,
            "clip": cfg.prism_dp_clip,
            "mechanism": "Gaussian, one release of each client's feature mean and second moment",
            "accountant": "RDP (dp-accounting)",
        }
    return inputs


def check_settings(values: Mapping[str, Any]) -> None:
    if values["prism-dp-epsilon"] > 0 and values["prism-loss"] == "pixel-mmd":
        raise ConfigError(
            "prism-dp-epsilon > 0 privatises the clients' feature statistics; prism-loss="
            "'pixel-mmd' compares raw images every step and has no DP release: use "
            "prism-loss='efficientnet-lite0'"
        )
