"""FedFTG: fine-tuning the global model via data-free knowledge distillation [Zhang et al.,
CVPR 2022, arXiv:2203.09249].

Clients train as in FedAvg. After the server averages each architecture group, it fine-tunes
every group's model on *hard samples* from a conditional generator, which it trains against
the round's client models; no data is ever seen by the server. Each of ``ftg-iterations``
iterations:

1. draws labels from the round's class totals and codes ``z``;
2. takes one Adam step on the generator: fidelity (the class-customised ensemble classifies a
   sample of class y as y; client k weighs ``n_ky / n_y``) - ``ftg-adversarial`` x the L1
   discrepancy between the global model(s) and the clients (hard samples) + ``ftg-diversity`` x
   a mode-seeking diversity term (:mod:`models.data_free`);
3. takes ``ftg-student-steps`` SGD steps on every architecture's global model toward the
   customised ensemble's probabilities on the same samples.

The generator persists across rounds in the server state (checkpointed with it). Heterogeneous
architectures: the ensemble holds every client model, whatever its architecture; one generator
serves every group, its discrepancy term averaged over the groups' models; each group's model
is fine-tuned (as in FedDF, knowledge thus crosses architectures). Differences from the
reference code: one generator step per iteration on the summed objective where the code steps
once per client on that client's share (the same objective, fewer, larger steps); the student
batch is generated in training mode like the generator's, so both see the same images.
"""

from __future__ import annotations

from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import nn

from federated_data import Federation
from models.data_free import (
    class_client_weights,
    discrepancy,
    diversity_loss,
    ensemble_targets,
    fidelity_loss,
    soft_cross_entropy,
)
from models.generators import Generator, GeneratorConfig, sample_labels
from models.training import seeded_generator
from protocol.settings import Section, Setting

from .base import RoundReport, kept_module, module_arrays, require_choice
from .fedavg import FedAvg, TrainReply, aggregation_settings
from .state import ServerState

CLASS_WEIGHTINGS = ("counts", "uniform")
GENERATOR_PREFIX = "ftg-generator/"

FEDFTG_SETTINGS = Section(
    "fedftg",
    (
        Setting(
            "ftg-iterations",
            10,
            "server fine-tuning iterations per round (one generator step, then the student "
            "steps); 0 = FedAvg",
            low=0,
        ),
        Setting("ftg-student-steps", 5, "global-model SGD steps per iteration", low=1),
        Setting("ftg-batch-size", 64, "generated samples per iteration", low=2),
        Setting(
            "ftg-student-lr",
            0.05,
            "SGD learning rate of the fine-tuning (the reference uses its clients' rate)",
            low=0.0,
            low_open=True,
        ),
        Setting("ftg-generator-lr", 0.01, "Adam learning rate of the generator", low=0.0),
        Setting("ftg-z-dim", 100, "generator code size", low=1),
        Setting("ftg-generator-width", 32, "generator width (channels of its last layer)", low=1),
        Setting(
            "ftg-adversarial",
            1.0,
            "weight of the hard-sample term (L1 discrepancy global vs clients, maximised)",
            low=0.0,
        ),
        Setting("ftg-diversity", 1.0, "weight of the mode-seeking diversity term", low=0.0),
        Setting(
            "ftg-class-weighting",
            "counts",
            "client k's say on class y: its share n_ky / n_y of the class (the paper), or "
            "uniform (an ablation)",
            choices=CLASS_WEIGHTINGS,
        ),
    ),
    "FedFTG's server-side fine-tuning on generated hard samples.",
)


class FedFTG(FedAvg):
    """FedAvg per architecture group + data-free fine-tuning of every group's model.

    Parameters
    ----------
    num_classes : int
    input_shape : tuple[int, int, int]
        (C, H, W) of the images; H and W divisible by 4 (the generator's constraint).
    iterations : int (default: 10)
        Fine-tuning iterations per round; 0 reduces to FedAvg.
    student_steps : int (default: 5)
        Global-model SGD steps per iteration, on that iteration's samples.
    batch_size : int (default: 64)
    student_lr : float (default: 0.05)
    generator_lr : float (default: 0.01)
    z_dim : int (default: 100)
    generator_width : int (default: 32)
    adversarial : float (default: 1.0)
        Weight of the discrepancy the generator maximises.
    diversity : float (default: 1.0)
        Weight of the generator's diversity term.
    class_weighting : str (default: "counts")
        ``counts`` (the paper's customised ensemble) or ``uniform``.
    device : torch.device | str (default: "cpu")
    **kwargs
        FedAvg's arguments.
    """

    name = "fedftg"

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
        iterations: int = 10,
        student_steps: int = 5,
        batch_size: int = 64,
        student_lr: float = 0.05,
        generator_lr: float = 0.01,
        z_dim: int = 100,
        generator_width: int = 32,
        adversarial: float = 1.0,
        diversity: float = 1.0,
        class_weighting: str = "counts",
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        require_choice("ftg-class-weighting", class_weighting, CLASS_WEIGHTINGS)
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.iterations = iterations
        self.student_steps = student_steps
        self.batch_size = batch_size
        self.student_lr = student_lr
        self.generator_lr = generator_lr
        self.generator_config = GeneratorConfig(
            kind="conditional", z_dim=z_dim, width=generator_width
        )
        self.adversarial = adversarial
        self.diversity = diversity
        self.class_weighting = class_weighting
        self.device = torch.device(device)

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t│   └── fine-tuning: %d iterations x (1 generator + %d student steps), batch %d, "
            "adversarial %g, diversity %g, %s class weights",
            self.iterations,
            self.student_steps,
            self.batch_size,
            self.adversarial,
            self.diversity,
            self.class_weighting,
        )

    def after_aggregation(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        if not self.iterations or not replies:
            return
        order = self.by_partition(replies)
        counts = np.array([self.nodes[n].label_counts for n in order], dtype=np.float64)
        weights = (
            class_client_weights(counts)
            if self.class_weighting == "counts"
            else np.full((self.num_classes, len(order)), 1 / len(order), np.float32)
        )
        teachers = [
            m.to(self.device).eval().requires_grad_(False) for m in self.client_models(replies)
        ]
        archs = sorted({self.nodes[n].architecture for n in order})
        students = {a: self.load_model(a, state.models[a]).to(self.device) for a in archs}
        generator = self._generator(state)
        gen = seeded_generator(self.seed, server_round, 0xF79)
        with torch.random.fork_rng(devices=[]):  # dropout in the students, seeded
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            losses = self._fine_tune(generator, teachers, students, counts.sum(0), weights, gen)
        for arch, student in students.items():
            state.models[arch] = module_arrays(student)
        state.put_data_under(GENERATOR_PREFIX, module_arrays(generator))
        report.metrics.update(losses)
        log(
            INFO,
            "Round %d: fine-tuned %s on %d generated samples (fidelity %.3f, discrepancy %.3f)",
            server_round,
            ", ".join(archs),
            self.iterations * self.batch_size,
            losses["ftg-fidelity"],
            losses["ftg-discrepancy"],
        )

    def _generator(self, state: ServerState) -> Generator:
        """The generator of the previous rounds (from the state), or a new one (its
        initialisation seeded by the run's seed, like every server-side draw)."""
        generator = kept_module(
            state,
            GENERATOR_PREFIX,
            lambda: Generator(self.input_shape, self.num_classes, self.generator_config),
            self.seed,
            0xF79,
        )
        return generator.to(self.device)

    def _fine_tune(
        self,
        generator: Generator,
        teachers: list[nn.Module],
        students: dict[str, nn.Module],
        class_totals: np.ndarray,
        weights: np.ndarray,
        gen: torch.Generator,
    ) -> dict[str, float]:
        """The iterations; returns the last iteration's loss terms."""
        g_opt = torch.optim.Adam(generator.parameters(), lr=self.generator_lr)
        s_opts = {
            a: torch.optim.SGD(s.parameters(), lr=self.student_lr) for a, s in students.items()
        }
        w_table = torch.as_tensor(weights, device=self.device)
        prior = class_totals if class_totals.sum() > 0 else np.ones(self.num_classes)
        out: dict[str, float] = {}
        generator.train()
        for _ in range(self.iterations):
            labels = sample_labels(prior, self.batch_size, gen).to(self.device)
            z = torch.randn(self.batch_size, self.generator_config.z_dim, generator=gen)
            z = z.to(self.device)
            w = w_table[labels]  # (batch, clients)

            for s in students.values():
                s.eval().requires_grad_(False)
            x = generator(z, labels)
            t_logits = [t(x) for t in teachers]
            fidelity = fidelity_loss(t_logits, labels, w)
            disc = torch.stack([discrepancy(s(x), t_logits, w) for s in students.values()]).mean()
            diversity = diversity_loss(z, x)
            loss = fidelity - self.adversarial * disc + self.diversity * diversity
            g_opt.zero_grad(set_to_none=True)
            loss.backward()
            g_opt.step()

            with torch.no_grad():
                x = generator(z, labels)
                targets = ensemble_targets([t(x) for t in teachers], w)
            for arch, s in students.items():
                s.train().requires_grad_(True)
                for _ in range(self.student_steps):
                    s_loss = soft_cross_entropy(s(x), targets)
                    s_opts[arch].zero_grad(set_to_none=True)
                    s_loss.backward()
                    s_opts[arch].step()
                out[f"ftg-student-loss/{arch}"] = float(s_loss.detach())
            out.update(
                {
                    "ftg-fidelity": float(fidelity.detach()),
                    "ftg-discrepancy": float(disc.detach()),
                    "ftg-diversity": float(diversity.detach()),
                }
            )
        for s in students.values():
            s.requires_grad_(True)
        return out


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FedFTG:
    return FedFTG(
        num_classes=fed.num_classes,
        input_shape=fed.input_shape,
        iterations=cfg.ftg_iterations,
        student_steps=cfg.ftg_student_steps,
        batch_size=cfg.ftg_batch_size,
        student_lr=cfg.ftg_student_lr,
        generator_lr=cfg.ftg_generator_lr,
        z_dim=cfg.ftg_z_dim,
        generator_width=cfg.ftg_generator_width,
        adversarial=cfg.ftg_adversarial,
        diversity=cfg.ftg_diversity,
        class_weighting=cfg.ftg_class_weighting,
        device=device,
        **aggregation_settings(cfg, fed),
        **common,
    )
