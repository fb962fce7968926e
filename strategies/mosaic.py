"""Mosaic: data-free knowledge distillation through a Mixture-of-Experts of client knowledge,
with local generators [Mosaic, arXiv:2505.19699; docs/methods/mosaic.md].

Rounds are FedAvg (one global model per architecture). At the distillation round (the middle of
the run by default; round 1 of 1 in one-shot mode), after averaging:

1. every client trains a generator on its data once (``train.generator``) and uploads it with a
   few confident synthetic prototypes; the discriminator and the auxiliary classifier stay on
   the client;
2. the server builds one expert per class from the round's client models, weighted by label
   counts: parameter averages when clients share one architecture (the reference's faithful
   mode), output-space mixtures otherwise (``models/experts.py``);
3. the meta model learns to fuse the experts' logits on the prototypes (synthetic images, or
   with one architecture the faithful ``query.prototypes`` k-means centroids of penultimate
   features of real examples);
4. every architecture's global model is distilled toward the (EMA) meta model on fresh batches
   from all client generators: ``0.8 KL + 0.2 CE + 1.0 JS``, student in eval mode.

Accuracy just before and right after the distillation is reported in the round's metrics.
Later rounds are FedAvg again (client lr scaled by ``mosaic-finetune-lr-scale``); with several
architectures every round after the event also distils each group toward the ensemble of all
client models FedDF-style, on a fresh pool of generator samples instead of public data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import nn

from federated_data import ArrayDataset, Federation
from models.assignment import parse_assignment
from models.experts import (
    ExpertPanel,
    distill_toward,
    expert_weights,
    holdout_split,
    last_linear,
    train_meta,
)
from models.generators import Generator, GeneratorConfig, generate, to_uint8
from models.interpolation import interpolate
from models.training import evaluate_classifier, images_to_tensor, score_logits, seeded_generator
from protocol import (
    ARRAYS_KEY,
    CANDIDATE_BLENDS,
    CANDIDATE_PREFIX,
    CONFIG_KEY,
    GENERATOR_KEY,
    METRICS_KEY,
    PROTOTYPES_KEY,
    QUERY_EVALUATE,
    QUERY_PROTOTYPES,
    TRAIN_GENERATOR,
    arrays_to_record,
    blend_name,
    record_to_arrays,
)
from protocol.settings import ConfigError, Section, Setting

from .aggregate import weighted_average
from .base import (
    FederationError,
    NodeInfo,
    RoundReport,
    load_arrays,
    module_arrays,
    require_choice,
)
from .distillation import EnsembleDistillation
from .fedavg import FedAvg, TrainReply, aggregation_settings
from .state import Arrays, ServerState
from .validation import InvalidReply, check_arrays, check_no_error, check_num_examples

PROTOTYPE_KINDS = ("synthetic", "features")
EVENT_GATES = ("off", "holdout", "clients")

MOSAIC_SETTINGS = Section(
    "mosaic",
    (
        Setting(
            "mosaic-distill-round",
            0,
            "the round whose end holds the distillation (0 = num-server-rounds // 2)",
            low=0,
        ),
        Setting("mosaic-one-shot", False, "one communication round that ends with the event"),
        Setting(
            "prototypes",
            "synthetic",
            "meta-model prototypes: confident generated images, or the reference's k-means "
            "centroids of penultimate features (one architecture)",
            choices=PROTOTYPE_KINDS,
        ),
        Setting(
            "prototypes-per-class",
            10,
            "most prototypes per client and class",
            low=1,
            travel="method",
        ),
        Setting(
            "prototype-min-cluster",
            5,
            "features: smallest k-means cluster kept",
            low=1,
            travel="method",
        ),
        Setting(
            "prototype-confidence",
            0.8,
            "synthetic: the client classifier's least confidence",
            low=0.0,
            high=1.0,
            travel="method",
        ),
        Setting("meta-steps", 300, "meta-model training steps", low=1),
        Setting("meta-lr", 0.001, "meta-model Adam learning rate", low=0.0, low_open=True),
        Setting("meta-ema", 0.99, "EMA decay of the meta model (the teacher)", low=0.0, high=1.0),
        Setting("mosaic-distill-steps", 300, "the event's distillation steps", low=0),
        Setting(
            "mosaic-distill-lr", 0.0001, "the event's Adam learning rate", low=0.0, low_open=True
        ),
        Setting("samples-per-generator", 32, "images per client generator per step", low=1),
        Setting(
            "mosaic-finetune-lr-scale",
            0.01,
            "client lr after the event, as a fraction of lr",
            low=0.0,
            high=1.0,
            low_open=True,
        ),
        Setting(
            "mosaic-event-gate",
            "off",
            "keep the pre-event models (and FedAvg's lr) unless the distilled ones are better: "
            "holdout = judged by a meta model fitted on part of the prototypes against them on "
            "the rest (data-free), clients = every client scores both on its own examples "
            "(counts only); off = always distil (the paper)",
            choices=EVENT_GATES,
        ),
        Setting(
            "mosaic-gate-blends",
            "",
            "client gate: more candidates between the pre-event (0) and the distilled (1) "
            "models, as comma-separated weights in (0, 1) of a weight-space interpolation, "
            "e.g. '0.25,0.5'; the candidate the clients score highest is kept",
        ),
        Setting(
            "mosaic-gate-holdout",
            0.3,
            "holdout gate: fraction of every class's prototypes held out to judge the event",
            low=0.0,
            high=0.9,
            low_open=True,
        ),
        Setting(
            "mosaic-pool-size",
            2000,
            "generator samples per round for the FedDF-style "
            "distillation after the event (several architectures)",
            low=2,
        ),
    ),
)


class Mosaic(FedAvg):
    """FedAvg rounds around one Mixture-of-Experts distillation event.

    Parameters
    ----------
    num_classes : int
    input_shape : tuple[int, int, int]
    generator_config : GeneratorConfig
        Must match what the clients build (the server validates uploads against it).
    test : ArrayDataset
        Held-out split, used only to *report* the meta model's and the pre-distillation
        accuracy; nothing trains on it.
    distill_round : int (default: 1)
        Round whose end holds the distillation event.
    prototypes : str (default: "synthetic")
        ``synthetic`` or ``features`` (the reference's; one architecture only: each expert's
        head is applied to the *global* model's features, which under strong skew gives the
        meta model little to learn from).
    prototypes_per_class : int (default: 10)
        Most prototypes a client may send per class (replies with more are dropped).
    meta_steps, meta_lr, meta_ema : int, float, float (defaults: 300, 1e-3, 0.99)
    mosaic_distill_steps, mosaic_distill_lr : int, float (defaults: 300, 1e-4)
        Adam steps and learning rate of the event's distillation.
    samples_per_generator : int (default: 32)
        Images drawn from each client generator per distillation step.
    finetune_lr_scale : float (default: 0.01)
        Client learning rate after the event, as a fraction of ``lr`` (the reference fine-tunes
        at 1e-4 after training at 1e-2: local steps at the full rate would undo the
        distillation under strong skew).
    pool_size : int (default: 2000)
        Generator samples per round for the FedDF-style cross-architecture distillation after
        the event (several architectures only).
    event_gate : str (default: "off")
        ``off``: the event always replaces the global models (the paper). ``holdout``: a meta
        model fitted on ``1 - gate_holdout`` of every class's prototypes must beat the pre-event
        global models on the rest, or the event is rejected: the models are kept and later
        rounds are plain FedAvg (full lr, no generator distillation). ``clients``: every
        client scores the pre-event and the distilled models on a sample of its own examples
        (``query.evaluate``, correct counts only); the distilled models are kept only when
        their mean accuracy over all clients' examples (each client weighted by its example
        count) is strictly higher, else the event is rejected as above.
    gate_blends : tuple[float, ...] (default: ())
        Client gate only: interpolation weights ``w`` in (0, 1) of further candidates
        ``(1 - w) pre + w distilled`` (the students start from the pre-event models, so the
        line between them stays in one basin, as in WiSE-FT). The clients score every
        candidate; the best one, when strictly better than the pre-event models, is kept.
    gate_holdout : float (default: 0.3)
        Fraction of every class's prototypes the holdout gate judges on.
    distillation : EnsembleDistillation | None (default: None)
        The FedDF-style distillation after the event (defaults when None).
    device : torch.device | str (default: "cpu")
        Where the server trains (meta model, distillation) and samples the generators.
    **kwargs
        The base strategy's arguments.
    """

    name = "mosaic"

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
        generator_config: GeneratorConfig,
        test: ArrayDataset,
        distill_round: int = 1,
        prototypes: str = "synthetic",
        prototypes_per_class: int = 10,
        meta_steps: int = 300,
        meta_lr: float = 1e-3,
        meta_ema: float = 0.99,
        mosaic_distill_steps: int = 300,
        mosaic_distill_lr: float = 1e-4,
        samples_per_generator: int = 32,
        finetune_lr_scale: float = 0.01,
        pool_size: int = 2000,
        event_gate: str = "off",
        gate_holdout: float = 0.3,
        gate_blends: tuple[float, ...] = (),
        distillation: EnsembleDistillation | None = None,
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> None:
        require_choice("prototypes", prototypes, PROTOTYPE_KINDS)
        require_choice("mosaic-event-gate", event_gate, EVENT_GATES)
        if gate_blends and event_gate != "clients":
            raise ValueError("gate_blends are candidates of the client gate (event_gate='clients')")
        if any(not 0.0 < w < 1.0 for w in gate_blends):
            raise ValueError(f"gate_blends must lie in (0, 1), got {gate_blends}")
        super().__init__(**kwargs)
        self.distillation = distillation or EnsembleDistillation(seed=self.seed, device=device)
        self.device = torch.device(device)
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.generator_config = generator_config
        self.test = test
        self.distill_round = distill_round
        self.prototypes = prototypes
        self.prototypes_per_class = prototypes_per_class
        self.meta_steps = meta_steps
        self.meta_lr = meta_lr
        self.meta_ema = meta_ema
        self.mosaic_distill_steps = mosaic_distill_steps
        self.mosaic_distill_lr = mosaic_distill_lr
        self.samples_per_generator = samples_per_generator
        self.finetune_lr_scale = finetune_lr_scale
        self.pool_size = pool_size
        self.event_gate = event_gate
        self.gate_holdout = gate_holdout
        self.gate_blends = tuple(sorted(set(gate_blends)))
        # partition id -> (generator, label counts); rebuilt from the state after a resume
        self.generators: dict[int, tuple[Generator, np.ndarray]] = {}
        self.event: dict[str, Any] = {}
        self.pending_images: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- rounds

    def train_config(self, server_round: int) -> dict[str, int | float | str | bool]:
        config = super().train_config(server_round)
        if server_round > self.distill_round and self._distilled:
            config["lr"] = float(self.node_config["lr"]) * self.finetune_lr_scale
        return config

    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        if not self.generators:  # a resumed run: generators and the event are in the state
            self._restore_generators(state)
            self.event = dict(state.extra.get("mosaic-event", {}))
        return super().train_round(grid, state, server_round)

    def after_aggregation(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        heterogeneous = len({self.nodes[n].architecture for n in replies}) > 1
        if server_round == self.distill_round and "distilled-round" not in state.extra:
            self._distillation_event(grid, state, replies, server_round, report)
        elif self.generators and heterogeneous and self._distilled:
            # data-free FedDF: the ensemble of client models on a fresh pool of generator samples
            pool = self._synthetic_pool(server_round)
            targets = self.distillation.mean_logits(self.client_models(replies), pool)
            architectures = {self.nodes[n].architecture for n in replies}
            self.distillation.distill(
                state, architectures, self.load_model, pool, targets, server_round, report
            )
            log(
                INFO,
                "Round %d: distilled %s toward the ensemble of %d client models on %d "
                "generator samples",
                server_round,
                ", ".join(sorted(state.models)),
                len(replies),
                len(pool),
            )

    # ----------------------------------------------------------------- the event

    def _distillation_event(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        archs = {self.nodes[n].architecture for n in replies}
        kind = self.prototypes
        if kind == "features" and len(archs) > 1:
            raise FederationError(
                f"prototypes=features needs one architecture; clients use {sorted(archs)}"
            )
        protos = self._generator_phase(grid, state, sorted(replies), server_round, report)
        if kind == "features":
            arch = next(iter(archs))
            protos = self._feature_prototypes(
                grid, state, arch, sorted(replies), server_round, report
            )
        order = self.by_partition(replies)
        panel = self._experts([replies[n][0] for n in order], [self.nodes[n] for n in order])
        test_tokens = panel.tokens(images_to_tensor(self.test.x))
        event: dict[str, Any] = {
            "round": server_round,
            "prototypes": kind,
            "num-prototypes": len(protos["y"]),
            "experts": "output-space" if panel.output_space else "parameter-space",
            # What the count-weighted experts give without a meta model: the mean of the tokens.
            "expert-mean-test-accuracy": score_logits(test_tokens.mean(1), self.test.y)["accuracy"],
        }
        fuse = self._meta_teacher(panel, protos, test_tokens, event, server_round)
        if self.event_gate == "holdout":
            event.update(self._judge(state, sorted(archs), panel, protos, server_round))
        for arch in archs:
            event[f"pre-distill-accuracy/{arch}"] = self._test_accuracy(arch, state)
        distilled = {}
        if event.get("gate", "accepted") == "accepted":
            distilled = self._distil_students(
                state, sorted(archs), panel, fuse, event, server_round
            )
        kept, kept_accuracy = distilled, {a: event[f"distilled-accuracy/{a}"] for a in distilled}
        if self.event_gate == "clients":
            verdict, kept, kept_accuracy = self._client_check(
                grid, state, distilled, event, sorted(replies), server_round, report
            )
            event.update(verdict)
        accepted = event.get("gate", "accepted") == "accepted"
        if accepted:
            state.models.update(kept)
        # Reported only: the global models' test accuracy before and after the event.
        for arch in archs:
            event[f"post-distill-accuracy/{arch}"] = (
                kept_accuracy[arch] if accepted else event[f"pre-distill-accuracy/{arch}"]
            )
        for key in ("pre-distill-accuracy", "post-distill-accuracy"):
            event[key] = float(np.mean([event[f"{key}/{a}"] for a in archs]))
        self.event = event
        state.extra["distilled-round"] = server_round
        state.extra["mosaic-event"] = event
        report.metrics.update({k: v for k, v in event.items() if isinstance(v, int | float)})
        _log_event(event, server_round)

    def _meta_teacher(
        self,
        panel: ExpertPanel,
        protos: dict[str, np.ndarray],
        test_tokens: torch.Tensor,
        event: dict[str, Any],
        server_round: int,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The event's teacher: the meta model's EMA fusing the experts' tokens, trained on
        the prototypes; without any prototype, the experts' mean. Fills ``event``."""
        if not len(protos["y"]):
            # No client generator produced an image its own classifier was confident about
            # (weak generators): distil toward the experts' mean rather than stop the run.
            log(
                WARNING,
                "Round %d: no usable prototype (prototype-confidence=%s too high for these "
                "generators?); distilling toward the experts' mean logits, no meta model",
                server_round,
                self.node_config.get("prototype-confidence"),
            )
            event["teacher"] = "expert-mean"
            return lambda tokens: tokens.mean(1)
        proto_tokens = self._prototype_tokens(panel, protos["x"])
        meta, fuse, meta_metrics = train_meta(
            proto_tokens,
            torch.from_numpy(protos["y"]),
            self.num_classes,
            steps=self.meta_steps,
            lr=self.meta_lr,
            ema_decay=self.meta_ema,
            seed=self.seed,
        )
        event.update(
            teacher="meta-model-ema",
            **meta_metrics,
            **{
                "meta-test-accuracy": _accuracy(meta, test_tokens, self.test.y),
                "meta-ema-test-accuracy": _accuracy(fuse, test_tokens, self.test.y),
            },
        )
        return fuse

    def _judge(
        self,
        state: ServerState,
        archs: list[str],
        panel: ExpertPanel,
        protos: dict[str, np.ndarray],
        server_round: int,
    ) -> dict[str, Any]:
        """The holdout gate, data-free: a meta model fitted on part of the prototypes against
        the pre-event global models on the rest. Accepted only when the teacher is strictly
        better (a tie keeps FedAvg, whose later rounds train at the full lr)."""
        fit, check = holdout_split(protos["y"], self.gate_holdout, self.seed)
        verdict: dict[str, Any] = {"gate-check-prototypes": len(check)}
        if not len(check):
            log(
                WARNING,
                "Round %d: Mosaic gate: no class has two prototypes, nothing to judge the "
                "event on; keeping the pre-event models",
                server_round,
            )
            return {**verdict, "gate": "rejected", "gate-accepted": 0}
        tokens = self._prototype_tokens(panel, protos["x"])
        labels = torch.from_numpy(protos["y"])
        _, judge, _ = train_meta(
            tokens[fit],
            labels[fit],
            self.num_classes,
            steps=self.meta_steps,
            lr=self.meta_lr,
            ema_decay=self.meta_ema,
            seed=self.seed,
        )
        x, y = protos["x"][check], protos["y"][check]
        teacher = _accuracy(judge, tokens[check], y)
        pre = float(np.mean([self._prototype_accuracy(arch, state, x, y) for arch in archs]))
        where = f"{len(check)} held-out prototypes the meta model scores"
        return {**verdict, **_verdict(server_round, where, teacher, pre)}

    def _client_check(
        self,
        grid: Grid,
        state: ServerState,
        distilled: dict[str, Arrays],
        event: dict[str, Any],
        node_ids: list[int],
        server_round: int,
        report: RoundReport,
    ) -> tuple[dict[str, Any], dict[str, Arrays], dict[str, float]]:
        """The client gate: every node scores the pre-event models, the distilled ones and the
        ``gate_blends`` between them on its own examples. The challenger with the highest mean
        accuracy (over architectures; each node weighted by its example count) is returned
        with the verdict and its test accuracy per architecture (reported only), accepted
        only when strictly better than the pre-event models; without a valid reply the
        pre-event models are kept. ``event`` holds the end points' test accuracy."""
        archs = sorted(distilled)
        pre = {a: state.models[a] for a in archs}
        blends = {blend_name(w): w for w in self.gate_blends}
        candidates = {
            "pre": pre,
            **{
                c: {a: interpolate(pre[a], distilled[a], w) for a in archs}
                for c, w in blends.items()
            },
            "post": distilled,
        }
        names = [f"{c}/{arch}" for c in candidates for arch in archs]
        config: dict[str, Any] = {**self.node_config, "server-round": server_round}
        if blends:  # the nodes build the blends from the two models: no bytes for them
            config[CANDIDATE_BLENDS] = list(self.gate_blends)
        records: dict[str, Any] = {CONFIG_KEY: ConfigRecord(config)}
        for c in ("pre", "post"):
            for arch in archs:
                records[f"{CANDIDATE_PREFIX}{c}/{arch}"] = arrays_to_record(candidates[c][arch])
        ex = self.phase(
            grid,
            {n: RecordDict(records) for n in node_ids},
            QUERY_EVALUATE,
            server_round,
            lambda reply: _parse_scores(reply, names, self.known_examples(reply)),
            report,
            require=False,
        )
        weights = {n: ex.replies[n][0] for n in self.by_partition(ex.replies)}
        total = sum(weights.values())
        verdict: dict[str, Any] = {"gate-clients": len(ex.replies), "gate-examples": total}
        if not total:
            log(
                WARNING,
                "Round %d: Mosaic gate: no client scored the distilled models (dropped: %s); "
                "keeping the pre-event models",
                server_round,
                ex.dropped,
            )
            return {**verdict, "gate": "rejected", "gate-accepted": 0, "gate-blend": 0.0}, {}, {}
        accuracy = {
            name: sum(w * ex.replies[n][1][name] for n, w in weights.items()) / total
            for name in names
        }
        score = {c: float(np.mean([accuracy[f"{c}/{a}"] for a in archs])) for c in candidates}
        kept_weight = {"pre": 0.0, **blends, "post": 1.0}
        tested = {  # the end points' test accuracy is known; only blends are evaluated
            "pre": {a: event[f"pre-distill-accuracy/{a}"] for a in archs},
            **{c: {a: self._test_accuracy(a, m) for a, m in candidates[c].items()} for c in blends},
            "post": {a: event[f"distilled-accuracy/{a}"] for a in archs},
        }
        verdict, best = self._choose(score, tested, kept_weight, verdict, server_round)
        return verdict, candidates[best], tested[best]

    @staticmethod
    def _choose(
        score: dict[str, float],
        tested: dict[str, dict[str, float]],
        weights: dict[str, float],
        verdict: dict[str, Any],
        server_round: int,
    ) -> tuple[dict[str, Any], str]:
        """The client gate's verdict and chosen candidate from every candidate's ``score`` on
        the clients' examples: the strongest challenger of the pre-event models (the first
        best in the order blends, distilled: a tie goes to the models closer to the pre-event
        ones), accepted only when strictly better; every candidate's mean test accuracy over
        architectures (``tested``) is added, reported only."""
        best = max(list(score)[1:], key=score.__getitem__)
        if len(score) > 2:
            log(
                INFO,
                "Round %d: Mosaic gate: the clients' accuracy of each candidate: %s",
                server_round,
                ", ".join(f"{c} {v:.4f}" for c, v in score.items()),
            )
        where = f"{verdict['gate-clients']} clients' examples the {best} models score"
        verdict.update(_verdict(server_round, where, score[best], score["pre"]))
        verdict["gate-blend"] = weights[best] if verdict["gate-accepted"] else 0.0
        for c, accuracy in tested.items():
            verdict[f"gate-score/{c}"] = score[c]
            verdict[f"gate-test-accuracy/{c}"] = float(np.mean(list(accuracy.values())))
        return verdict, best

    def _prototype_tokens(self, panel: ExpertPanel, x: np.ndarray) -> torch.Tensor:
        """The experts' tokens on prototypes: heads on features, or whole models on images."""
        if self.prototypes == "features":
            return panel.head_tokens(torch.from_numpy(x))
        return panel.tokens(images_to_tensor(x))

    def _prototype_accuracy(
        self, arch: str, state: ServerState, x: np.ndarray, y: np.ndarray
    ) -> float:
        """A global model's accuracy on prototypes (its head alone on feature prototypes)."""
        model = self.load_model(arch, state.models[arch])
        if self.prototypes != "features":
            return evaluate_classifier(model, x, y, self.device)["accuracy"]
        model.eval()
        with torch.no_grad():
            return score_logits(last_linear(model)(torch.from_numpy(x)), y)["accuracy"]

    @property
    def _distilled(self) -> bool:
        """Whether the event has replaced the global models (the gate may have kept them)."""
        return bool(self.event) and self.event.get("gate", "accepted") == "accepted"

    def _distil_students(
        self,
        state: ServerState,
        archs: list[str],
        panel: ExpertPanel,
        fuse: Callable[[torch.Tensor], torch.Tensor],
        event: dict[str, Any],
        server_round: int,
    ) -> dict[str, Arrays]:
        """Every architecture's global model distilled toward the teacher (the state is left
        as it is: a gate may still reject them); the losses and the distilled models' test
        accuracy (reported only) go to ``event``."""
        students = [self.load_model(arch, state.models[arch]) for arch in archs]
        losses = self._distill(students, panel, fuse, server_round)
        distilled = {}
        for arch, student, loss in zip(archs, students, losses, strict=True):
            distilled[arch] = module_arrays(student)
            event[f"distill-loss/{arch}"] = loss
            event[f"distilled-accuracy/{arch}"] = self._test_accuracy(arch, distilled[arch])
        event["distilled-accuracy"] = float(
            np.mean([event[f"distilled-accuracy/{a}"] for a in archs])
        )
        return distilled

    def _experts(self, client_arrays: list[Arrays], infos: list[NodeInfo]) -> ExpertPanel:
        """One expert per class, weighted by label counts: parameter averages when the clients
        share one architecture, output-space mixtures of the client models otherwise."""
        w = expert_weights(np.array([i.label_counts for i in infos], dtype=np.float64))
        archs = {i.architecture for i in infos}
        if len(archs) == 1:
            arch = next(iter(archs))
            experts = [
                self.load_model(arch, weighted_average(client_arrays, list(w[:, c])))
                for c in range(self.num_classes)
            ]
            return ExpertPanel(experts, None)
        models = [
            self.load_model(i.architecture, a) for a, i in zip(client_arrays, infos, strict=True)
        ]
        return ExpertPanel(models, w)

    def _distill(
        self,
        students: list[nn.Module],
        panel: ExpertPanel,
        fuse: Callable[[torch.Tensor], torch.Tensor],
        server_round: int,
    ) -> list[float]:
        """Distil the students toward ``fuse`` (the meta model) over the experts' tokens, on
        fresh batches of ``samples_per_generator`` images from every client generator."""
        gen = seeded_generator(self.seed, server_round, 0xD15)
        # The event's experts and meta model were built on the CPU; the teacher runs beside
        # the students.
        panel.to(self.device)
        if isinstance(fuse, nn.Module):
            fuse.to(self.device)
        return distill_toward(
            [s.to(self.device) for s in students],
            lambda: self._sample(self.samples_per_generator, gen).to(self.device),
            lambda x: fuse(panel.tokens(x)),
            steps=self.mosaic_distill_steps,
            lr=self.mosaic_distill_lr,
        )

    # ----------------------------------------------------------------- generators

    def _generator_phase(
        self,
        grid: Grid,
        state: ServerState,
        node_ids: list[int],
        server_round: int,
        report: RoundReport,
    ) -> dict[str, np.ndarray]:
        """Ask every node for its generator; keep valid ones in the state; pool prototypes."""
        template = self._generator_template()
        config = ConfigRecord({**self.node_config, "server-round": server_round})
        payload = RecordDict({CONFIG_KEY: config})
        image_shape = (self.num_classes, *self.input_shape)
        ex = self.phase(
            grid,
            {n: payload for n in node_ids},
            TRAIN_GENERATOR,
            server_round,
            lambda reply: _parse_generator(reply, template, image_shape, self.prototypes_per_class),
            report,
        )
        xs, ys = [], []
        for node_id in self.by_partition(ex.replies):
            arrays, proto_x, proto_y, metrics = ex.replies[node_id]
            pid = self.nodes[node_id].partition_id
            for k, v in arrays.items():
                state.data[f"generator/{pid}/{k}"] = v
            state.data[f"generator/{pid}/label-counts"] = np.asarray(
                self.nodes[node_id].label_counts, dtype=np.int64
            )
            xs.append(proto_x)
            ys.append(proto_y)
            for k in ("generator-train-seconds", "generator-d-loss", "generator-g-loss"):
                report.metrics[f"{k}/p{pid}"] = metrics.get(k, float("nan"))
        self._restore_generators(state)
        for pid, (generator, counts) in sorted(self.generators.items()):
            images, _ = generate(generator, 64, seeded_generator(self.seed, pid), _held(counts))
            self.pending_images[f"generator-p{pid}"] = to_uint8(images)
        return {"x": np.concatenate(xs), "y": np.concatenate(ys)}

    def _feature_prototypes(
        self,
        grid: Grid,
        state: ServerState,
        arch: str,
        node_ids: list[int],
        server_round: int,
        report: RoundReport,
    ) -> dict[str, np.ndarray]:
        """The faithful prototypes: k-means centroids of the global model's features."""
        config = ConfigRecord({**self.node_config, "server-round": server_round})
        payload = RecordDict({ARRAYS_KEY: arrays_to_record(state.models[arch]), CONFIG_KEY: config})
        dim = last_linear(self.model_fn(arch)).in_features
        ex = self.phase(
            grid,
            {n: payload for n in node_ids},
            QUERY_PROTOTYPES,
            server_round,
            lambda reply: _parse_prototypes(
                reply, (dim,), np.float32, self.num_classes, self.prototypes_per_class
            ),
            report,
        )
        order = self.by_partition(ex.replies)
        return {
            "x": np.concatenate([ex.replies[n][0] for n in order]),
            "y": np.concatenate([ex.replies[n][1] for n in order]),
        }

    def _generator_template(self) -> Arrays:
        return module_arrays(Generator(self.input_shape, self.num_classes, self.generator_config))

    def _restore_generators(self, state: ServerState) -> None:
        """Rebuild the server's generator modules from ``state.data`` (after a resume too)."""
        pids = sorted({int(k.split("/")[1]) for k in state.data if k.startswith("generator/")})
        for pid in pids:
            prefix = f"generator/{pid}/"
            arrays = {
                k[len(prefix) :]: v
                for k, v in state.data.items()
                if k.startswith(prefix) and k != prefix + "label-counts"
            }
            g = Generator(self.input_shape, self.num_classes, self.generator_config)
            load_arrays(g, arrays)
            self.generators[pid] = (g, np.asarray(state.data[prefix + "label-counts"]))

    def _sample(self, per_generator: int, gen: torch.Generator) -> torch.Tensor:
        """``per_generator`` images in [-1, 1] from every client generator (conditional ones
        balanced over the classes their client holds)."""
        return torch.cat(
            [
                generate(g, per_generator, gen, _held(counts), self.device)[0]
                for _, (g, counts) in sorted(self.generators.items())
            ]
        )

    def _synthetic_pool(self, server_round: int) -> np.ndarray:
        gen = seeded_generator(self.seed, server_round, 0x9001)
        per = max(1, self.pool_size // max(len(self.generators), 1))
        return to_uint8(self._sample(per, gen))

    # ----------------------------------------------------------------- reporting

    def _test_accuracy(self, arch: str, models: ServerState | Arrays) -> float:
        """Test accuracy (reported only) of ``arch``'s global model, or of given arrays."""
        arrays = models.models[arch] if isinstance(models, ServerState) else models
        model = self.load_model(arch, arrays)
        return evaluate_classifier(model, self.test.x, self.test.y, self.device)["accuracy"]

    def take_images(self) -> dict[str, np.ndarray]:
        images, self.pending_images = self.pending_images, {}
        return images

    def extra_summary(self, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        g = Generator(input_shape, self.num_classes, self.generator_config)
        return {
            "mosaic": {
                "distill-round": self.distill_round,
                "generator": {
                    **self.generator_config.__dict__,
                    "parameters": sum(p.numel() for p in g.parameters()),
                },
                "event": self.event,
            }
        }

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t│   └── Mosaic: event at round %d, %s generator (%d steps), prototypes %s, "
            "meta %d steps, distillation %d steps (lr %g, %d images per generator), gate %s",
            self.distill_round,
            self.generator_config.kind,
            self.generator_config.steps,
            self.prototypes,
            self.meta_steps,
            self.mosaic_distill_steps,
            self.mosaic_distill_lr,
            self.samples_per_generator,
            self.event_gate,
        )


def parse_blends(text: str) -> tuple[float, ...]:
    """``mosaic-gate-blends``: comma-separated weights, each in (0, 1)."""
    weights = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            w = float(part)
        except ValueError:
            raise ConfigError(f"mosaic-gate-blends: {part!r} is not a number") from None
        if not 0.0 < w < 1.0:
            raise ConfigError(
                f"mosaic-gate-blends: {part} is not in (0, 1) (0 is the pre-event model and 1 "
                "the distilled one, both candidates already)"
            )
        weights.append(w)
    return tuple(weights)


def _verdict(server_round: int, where: str, candidate: float, pre: float) -> dict[str, Any]:
    """A gate's verdict, logged: the event is kept only when ``candidate`` (the teacher or the
    distilled models) scores strictly higher than the pre-event models (a tie keeps FedAvg)."""
    accepted = candidate > pre
    log(
        INFO,
        "Round %d: Mosaic gate: on %s %.4f, the pre-event global models %.4f: %s",
        server_round,
        where,
        candidate,
        pre,
        "distilling" if accepted else "keeping the pre-event models (event rejected)",
    )
    return {
        "gate": "accepted" if accepted else "rejected",
        "gate-accepted": int(accepted),
        "gate-teacher-accuracy": candidate,
        "gate-pre-accuracy": pre,
    }


def _log_event(event: dict[str, Any], server_round: int) -> None:
    log(
        INFO,
        "Round %d: Mosaic distillation (%s experts, %d %s prototypes): meta model test "
        "accuracy %.4f (EMA %.4f); global accuracy %.4f before -> %.4f after",
        server_round,
        event["experts"],
        event["num-prototypes"],
        event["prototypes"],
        event.get("meta-test-accuracy", float("nan")),
        event.get("meta-ema-test-accuracy", float("nan")),
        event["pre-distill-accuracy"],
        event["post-distill-accuracy"],
    )


def _held(counts: np.ndarray) -> np.ndarray:
    return (np.asarray(counts) > 0).astype(np.float64)


def _accuracy(model: nn.Module, tokens: torch.Tensor, y: np.ndarray) -> float:
    with torch.no_grad():
        return score_logits(model(tokens), y)["accuracy"]


def _parse_generator(
    reply: Message,
    template: Arrays,
    image_shape: tuple[int, ...],
    per_class: int,
) -> tuple[Arrays, np.ndarray, np.ndarray, dict[str, float]]:
    """A ``train.generator`` reply: generator arrays shaped as ``template``, image prototypes
    of ``image_shape[1:]`` with labels below ``image_shape[0]``, and metrics."""
    check_no_error(reply)
    content = reply.content
    for key in (GENERATOR_KEY, PROTOTYPES_KEY, METRICS_KEY):
        if key not in content:
            raise InvalidReply(f"reply lacks '{key}'")
    arrays = check_arrays(content[GENERATOR_KEY], template)
    num_classes, *shape = image_shape
    x, y = _parse_prototypes(reply, tuple(shape), np.uint8, num_classes, per_class)
    check_num_examples(content[METRICS_KEY])
    metrics = {k: float(v) for k, v in content[METRICS_KEY].items() if isinstance(v, int | float)}
    return arrays, x, y, metrics


def _parse_scores(
    reply: Message, names: list[str], at_most: int | None
) -> tuple[int, dict[str, float]]:
    """A ``query.evaluate`` reply: the node's example count (at most what it reported in
    ``query.info``) and every candidate's accuracy on the ``evaluated`` examples, from correct
    counts that are integers in [0, evaluated]."""
    check_no_error(reply)
    metrics = reply.content.get(METRICS_KEY)
    n = check_num_examples(metrics, at_most)
    assert isinstance(metrics, MetricRecord)  # check_num_examples made sure
    evaluated = _count(metrics, "evaluated", n)
    if n and not evaluated:
        raise InvalidReply(f"evaluated=0 of num-examples={n}")
    return n, {
        name: _count(metrics, f"correct/{name}", evaluated) / evaluated if evaluated else 0.0
        for name in names
    }


def _count(metrics: MetricRecord, key: str, at_most: int) -> int:
    """``metrics[key]``, which must be an integer in [0, at_most]."""
    value = metrics.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= at_most:
        raise InvalidReply(f"{key}={value!r} is not a count in [0, {at_most}]")
    return value


def _parse_prototypes(
    reply: Message,
    shape: tuple[int, ...],
    dtype: type,
    num_classes: int,
    per_class: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Prototypes ``x`` (P, *shape) of ``dtype`` with int64 labels ``y`` in [0, C), at most
    ``per_class`` per class, finite."""
    check_no_error(reply)
    record = reply.content[PROTOTYPES_KEY]
    if not isinstance(record, ArrayRecord) or set(record.keys()) != {"x", "y"}:
        raise InvalidReply(f"'{PROTOTYPES_KEY}' must be an ArrayRecord with 'x' and 'y'")
    arrays = record_to_arrays(record)
    x, y = arrays["x"], arrays["y"]
    if x.dtype != dtype or tuple(x.shape[1:]) != tuple(shape):
        raise InvalidReply(
            f"prototypes are {x.dtype}{list(x.shape)}, expected {np.dtype(dtype)}[P, "
            f"{', '.join(map(str, shape))}]"
        )
    if y.dtype != np.int64 or y.shape != (len(x),):
        raise InvalidReply(
            f"prototype labels are {y.dtype}{list(y.shape)}, expected int64[{len(x)}]"
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise InvalidReply(f"prototype labels outside [0, {num_classes})")
    if len(y) and np.bincount(y, minlength=num_classes).max() > per_class:
        raise InvalidReply(f"more than prototypes-per-class={per_class} prototypes of a class")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise InvalidReply("prototypes hold NaN or Inf")
    return x, y


def distill_round(cfg: Any) -> int:
    """The event's round: 1 in one-shot mode, else ``mosaic-distill-round`` or the middle."""
    if cfg.mosaic_one_shot:
        return 1
    return int(cfg.mosaic_distill_round or max(1, cfg.num_server_rounds // 2))


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> Mosaic:
    return Mosaic(  # data-free: no public_x, it distils on generator samples
        num_classes=fed.num_classes,
        input_shape=fed.input_shape,
        generator_config=GeneratorConfig.from_config(common["node_config"]),
        test=fed.test,
        distill_round=distill_round(cfg),
        prototypes=cfg.prototypes,
        prototypes_per_class=cfg.prototypes_per_class,
        meta_steps=cfg.meta_steps,
        meta_lr=cfg.meta_lr,
        meta_ema=cfg.meta_ema,
        mosaic_distill_steps=cfg.mosaic_distill_steps,
        mosaic_distill_lr=cfg.mosaic_distill_lr,
        samples_per_generator=cfg.samples_per_generator,
        finetune_lr_scale=cfg.mosaic_finetune_lr_scale,
        pool_size=cfg.mosaic_pool_size,
        event_gate=cfg.mosaic_event_gate,
        gate_holdout=cfg.mosaic_gate_holdout,
        gate_blends=parse_blends(cfg.mosaic_gate_blends),
        distillation=EnsembleDistillation.from_config(cfg, device),
        device=device,
        **aggregation_settings(cfg, fed),
        **common,
    )


def check_settings(values: Mapping[str, Any]) -> None:
    rounds, event = values["num-server-rounds"], values["mosaic-distill-round"]
    if values["mosaic-one-shot"]:
        if rounds != 1 or event > 1:
            raise ConfigError(
                "mosaic-one-shot=true is a single communication round that ends with the "
                f"distillation: set num-server-rounds=1 (got {rounds}) and leave "
                f"mosaic-distill-round at 0 or 1 (got {event})"
            )
    elif event > rounds:
        raise ConfigError(
            f"mosaic-distill-round={event} is after the last round (num-server-rounds={rounds})"
        )
    if parse_blends(values["mosaic-gate-blends"]) and values["mosaic-event-gate"] != "clients":
        raise ConfigError(
            "mosaic-gate-blends are candidates of the client gate: set mosaic-event-gate=clients "
            f"(got {values['mosaic-event-gate']!r})"
        )
    if values["prototypes"] == "features" and len(set(parse_assignment(values["models"]))) > 1:
        raise ConfigError(
            "prototypes='features' (penultimate-feature centroids) needs one architecture; "
            "use 'synthetic' or 'auto' with heterogeneous models"
        )
