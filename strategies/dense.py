"""DENSE: data-free one-shot federated learning [Zhang et al., NeurIPS 2022, arXiv:2112.12371].

Clients train locally and upload their models once (a run of ``num-server-rounds=1``; more
rounds repeat the procedure from the distilled models). The server then builds each
architecture's global model by distillation from the ensemble of *all* client models (the mean
of their logits), on images it synthesises itself. Each of ``dense-epochs`` epochs:

1. **data generation**: a freshly initialised generator and a batch of learnable codes ``z``
   (Adam on both, ``dense-generator-lr``, betas (0.5, 0.999)) take ``dense-generator-steps``
   steps on ``dense-ce`` x CE(ensemble(x), y) for labels y drawn uniformly + ``dense-bn`` x the
   batch-norm statistics loss of every client model (:class:`models.data_free.
   BatchNormStatistics`) - ``dense-adversarial`` x the KL between ensemble and student on the
   samples where they disagree (:func:`models.data_free.disagreement_kl`); the batch of the
   lowest loss joins a pool of synthetic images (stored as uint8, like the reference's images
   on disk);
2. **model distillation**: every student takes ``dense-kd-passes`` shuffled passes over the
   whole pool (batches of ``dense-batch-size``; SGD with momentum 0.9, ``dense-student-lr``) on
   T^2 KL(ensemble / T || student / T), ``dense-temperature``. The reference takes one pass (the
   default); at CPU budgets synthesis costs far more than distillation and a fresh student that
   sees the pool once takes too few steps to learn (21 SGD steps in 6 epochs), so more passes
   reuse the synthetic images (our extension).

Students start from a fresh initialisation (the reference code) or, with
``dense-student-init=average``, from the architecture group's FedAvg average. Heterogeneous
architectures: the ensemble holds every client model; the generator's adversarial term is
averaged over the students (one per architecture); every student learns from the whole
ensemble. The mlp has no batch norm: the statistics term comes from the models that have it.
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
from models.data_free import BatchNormStatistics, disagreement_kl
from models.generators import Generator, GeneratorConfig, to_uint8
from models.training import images_to_tensor, kd_loss, seeded_generator
from protocol.settings import Section, Setting

from .base import RoundReport, module_arrays, require_choice
from .fedavg import FedAvg, TrainReply, aggregation_settings
from .state import ServerState

STUDENT_INITS = ("fresh", "average")

DENSE_SETTINGS = Section(
    "dense",
    (
        Setting(
            "dense-epochs",
            20,
            "synthesis + distillation epochs per round (the paper: 200 on a GPU)",
            low=0,
        ),
        Setting("dense-generator-steps", 30, "generator steps per synthesised batch", low=1),
        Setting("dense-batch-size", 64, "synthesised batch size and distillation batch", low=2),
        Setting("dense-generator-lr", 0.001, "Adam learning rate of generator and codes", low=0.0),
        Setting(
            "dense-student-lr", 0.01, "SGD learning rate of the students", low=0.0, low_open=True
        ),
        Setting(
            "dense-kd-passes",
            1,
            "student passes over the synthetic pool per epoch (the reference: 1)",
            low=1,
        ),
        Setting("dense-temperature", 20.0, "distillation temperature", low=0.0, low_open=True),
        Setting("dense-ce", 1.0, "weight of the ensemble's CE on the sampled labels", low=0.0),
        Setting("dense-bn", 1.0, "weight of the batch-norm statistics loss", low=0.0),
        Setting(
            "dense-adversarial",
            1.0,
            "weight of the ensemble-student disagreement the generator maximises",
            low=0.0,
        ),
        Setting("dense-z-dim", 256, "generator code size", low=1),
        Setting("dense-generator-width", 32, "generator width (channels of its last layer)", low=1),
        Setting(
            "dense-student-init",
            "fresh",
            "students start fresh (the reference code) or from their group's FedAvg average",
            choices=STUDENT_INITS,
        ),
    ),
    "DENSE's server-side synthesis and distillation.",
)


class Dense(FedAvg):
    """One-shot federated learning by data-free ensemble distillation on the server.

    Parameters
    ----------
    num_classes : int
    input_shape : tuple[int, int, int]
        (C, H, W); H and W divisible by 4 (the generator's constraint).
    epochs : int (default: 20)
        Synthesis + distillation epochs per round; 0 reduces to FedAvg.
    generator_steps : int (default: 30)
    batch_size : int (default: 64)
    generator_lr : float (default: 1e-3)
    student_lr : float (default: 0.01)
    kd_passes : int (default: 1)
        Student passes over the pool per epoch (the reference: 1).
    temperature : float (default: 20.0)
    ce_weight, bn_weight, adversarial_weight : float (default: 1.0 each)
        The generator's loss terms.
    z_dim : int (default: 256)
    generator_width : int (default: 32)
    student_init : str (default: "fresh")
        ``fresh`` or ``average`` (the FedAvg average of the architecture's group).
    device : torch.device | str (default: "cpu")
    **kwargs
        FedAvg's arguments.
    """

    name = "dense"

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
        epochs: int = 20,
        generator_steps: int = 30,
        batch_size: int = 64,
        generator_lr: float = 1e-3,
        student_lr: float = 0.01,
        kd_passes: int = 1,
        temperature: float = 20.0,
        ce_weight: float = 1.0,
        bn_weight: float = 1.0,
        adversarial_weight: float = 1.0,
        z_dim: int = 256,
        generator_width: int = 32,
        student_init: str = "fresh",
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        require_choice("dense-student-init", student_init, STUDENT_INITS)
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.epochs = epochs
        self.generator_steps = generator_steps
        self.batch_size = batch_size
        self.generator_lr = generator_lr
        self.student_lr = student_lr
        self.kd_passes = kd_passes
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.bn_weight = bn_weight
        self.adversarial_weight = adversarial_weight
        self.generator_config = GeneratorConfig(
            kind="unconditional", z_dim=z_dim, width=generator_width
        )
        self.student_init = student_init
        self.device = torch.device(device)

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t│   └── synthesis: %d epochs x %d generator steps, batch %d; students %s, "
            "%d pass(es) a pool, T %g",
            self.epochs,
            self.generator_steps,
            self.batch_size,
            self.student_init,
            self.kd_passes,
            self.temperature,
        )

    def after_aggregation(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        if not self.epochs or not replies:
            return
        teachers = [
            m.to(self.device).eval().requires_grad_(False) for m in self.client_models(replies)
        ]
        archs = sorted({self.nodes[n].architecture for n in replies})
        students = {a: self._student(a, state, server_round) for a in archs}
        gen = seeded_generator(self.seed, server_round, 0xDE5)
        with torch.random.fork_rng(devices=[]):  # generator init and dropout, seeded
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            metrics = self._distill(teachers, students, gen)
        for arch, student in students.items():
            state.models[arch] = module_arrays(student)
        report.metrics.update(metrics)
        log(
            INFO,
            "Round %d: distilled %s from %d client models on %d synthetic images",
            server_round,
            ", ".join(archs),
            len(teachers),
            self.epochs * self.batch_size,
        )

    def _student(self, arch: str, state: ServerState, server_round: int) -> nn.Module:
        if self.student_init == "average":
            return self.load_model(arch, state.models[arch]).to(self.device)
        with torch.random.fork_rng(devices=[]):
            keys = [self.seed, server_round, 0xDE5, sum(map(ord, arch))]
            torch.manual_seed(int(np.random.SeedSequence(keys).generate_state(1)[0]))
            return self.model_fn(arch).to(self.device)

    def _ensemble(self, teachers: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(x) for t in teachers]).mean(0)

    def _synthesise(
        self,
        teachers: list[nn.Module],
        students: dict[str, nn.Module],
        stats: BatchNormStatistics,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One batch: the generator step of the lowest loss; returns it and its loss terms."""
        generator = Generator(self.input_shape, self.num_classes, self.generator_config)
        generator.to(self.device).train()
        z = torch.randn(self.batch_size, self.generator_config.z_dim, generator=gen)
        z = z.to(self.device).requires_grad_(True)
        labels = torch.randint(0, self.num_classes, (self.batch_size,), generator=gen)
        labels = labels.to(self.device)
        opt = torch.optim.Adam(
            [*generator.parameters(), z], lr=self.generator_lr, betas=(0.5, 0.999)
        )
        for s in students.values():
            s.eval().requires_grad_(False)
        best: tuple[float, torch.Tensor, dict[str, float]] | None = None
        for _ in range(self.generator_steps):
            x = generator(z)
            stats.loss()  # drop the terms of earlier passes
            t = self._ensemble(teachers, x)
            bn = stats.loss()
            ce = nn.functional.cross_entropy(t, labels)
            adv = torch.stack([disagreement_kl(s(x), t) for s in students.values()]).mean()
            loss = self.ce_weight * ce + self.bn_weight * bn - self.adversarial_weight * adv
            if best is None or loss.item() < best[0]:
                terms = {
                    "dense-ce": ce.item(),
                    "dense-bn": bn.item(),
                    "dense-adversarial": adv.item(),
                }
                best = (loss.item(), x.detach(), terms)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        assert best is not None
        return best[1], best[2]

    def _distill(
        self, teachers: list[nn.Module], students: dict[str, nn.Module], gen: torch.Generator
    ) -> dict[str, float]:
        pool_x: list[np.ndarray] = []
        pool_t: list[torch.Tensor] = []
        metrics: dict[str, float] = {}
        opts = {
            a: torch.optim.SGD(s.parameters(), lr=self.student_lr, momentum=0.9)
            for a, s in students.items()
        }
        with BatchNormStatistics(teachers) as stats:
            for epoch in range(1, self.epochs + 1):
                x, metrics = self._synthesise(teachers, students, stats, gen)
                images = to_uint8(x)  # the pool holds images, as the reference's files do
                pool_x.append(images)
                with torch.no_grad():
                    pool_t.append(self._ensemble(teachers, images_to_tensor(images, self.device)))
                pool, targets = np.concatenate(pool_x), torch.cat(pool_t)
                for _ in range(self.kd_passes):
                    metrics.update(self._kd_pass(students, opts, pool, targets, gen))
                # Synthesis takes minutes on a CPU: say how far it has got.
                kd = ", ".join(
                    f"{k.removeprefix('dense-kd-loss/')} {v:.3g}"
                    for k, v in metrics.items()
                    if k.startswith("dense-kd-loss/")
                )
                log(
                    INFO,
                    "DENSE epoch %d/%d: pool %d images, ensemble CE %.3g, KD loss %s",
                    epoch,
                    self.epochs,
                    len(pool),
                    metrics["dense-ce"],
                    kd,
                )
        metrics["dense-pool-size"] = float(sum(len(p) for p in pool_x))
        for s in students.values():
            s.requires_grad_(True)
        return metrics

    def _kd_pass(
        self,
        students: dict[str, nn.Module],
        opts: dict[str, torch.optim.SGD],
        x: np.ndarray,
        targets: torch.Tensor,
        gen: torch.Generator,
    ) -> dict[str, float]:
        """One shuffled pass over the pool for every student; its last batch's loss."""
        out: dict[str, float] = {}
        order = torch.randperm(len(x), generator=gen)
        xs = images_to_tensor(x, self.device)
        for arch, s in students.items():
            s.train().requires_grad_(True)
            opt = opts[arch]
            for i in range(0, len(x), self.batch_size):
                idx = order[i : i + self.batch_size]
                if len(idx) < 2:
                    continue
                loss = kd_loss(s(xs[idx]), targets[idx], self.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                out[f"dense-kd-loss/{arch}"] = float(loss.detach())
        return out


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> Dense:
    return Dense(
        num_classes=fed.num_classes,
        input_shape=fed.input_shape,
        epochs=cfg.dense_epochs,
        generator_steps=cfg.dense_generator_steps,
        batch_size=cfg.dense_batch_size,
        generator_lr=cfg.dense_generator_lr,
        student_lr=cfg.dense_student_lr,
        kd_passes=cfg.dense_kd_passes,
        temperature=cfg.dense_temperature,
        ce_weight=cfg.dense_ce,
        bn_weight=cfg.dense_bn,
        adversarial_weight=cfg.dense_adversarial,
        z_dim=cfg.dense_z_dim,
        generator_width=cfg.dense_generator_width,
        student_init=cfg.dense_student_init,
        device=device,
        **aggregation_settings(cfg, fed),
        **common,
    )
