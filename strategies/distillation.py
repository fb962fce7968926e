"""Server-side ensemble distillation, one component for the methods that use it: FedDF (on the
public split, every round), FMD's ``fmd-server-distill`` ablation and Mosaic's rounds after its
event (on a pool of generator samples)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from models.training import distill, predict_logits, seeded_generator

from .base import RoundReport, module_arrays
from .state import Arrays, ServerState


class EnsembleDistillation:
    """Distils each architecture's global model toward target logits on unlabelled images.

    Parameters
    ----------
    steps : int (default: 200)
        Adam steps per architecture per round.
    lr : float (default: 1e-3)
    batch_size : int (default: 64)
    temperature : float (default: 1.0)
    device : torch.device | str (default: "cpu")
    seed : int (default: 0)
        With the round and the architecture, seeds the batches and dropout.
    """

    def __init__(
        self,
        *,
        steps: int = 200,
        lr: float = 1e-3,
        batch_size: int = 64,
        temperature: float = 1.0,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.temperature = temperature
        self.device = torch.device(device)
        self.seed = seed

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device) -> EnsembleDistillation:
        """From the run config's ``distill-*`` settings (feddf.DISTILL_SETTINGS)."""
        return cls(
            steps=cfg.distill_steps,
            lr=cfg.distill_lr,
            batch_size=cfg.distill_batch_size,
            temperature=cfg.distill_temperature,
            device=device,
            seed=cfg.seed,
        )

    def mean_logits(self, models: Iterable[nn.Module], x: np.ndarray) -> torch.Tensor:
        """The ensemble's targets: mean eval-mode logits of ``models`` on ``x``."""
        total: torch.Tensor | None = None
        count = 0
        for model in models:
            logits = predict_logits(model, x, self.device)
            total = logits if total is None else total + logits
            count += 1
        if total is None:
            raise ValueError("an ensemble needs at least one model")
        return total / count

    def distill(
        self,
        state: ServerState,
        architectures: Iterable[str],
        load_model: Callable[[str, Arrays], nn.Module],
        x: np.ndarray,
        targets: torch.Tensor,
        server_round: int,
        report: RoundReport,
    ) -> None:
        """Replace every listed architecture's global model in ``state`` by its distilled
        version; each one's final loss goes to ``report`` as ``distill-loss/<arch>``."""
        for arch in sorted(set(architectures)):
            student = load_model(arch, state.models[arch])
            loss = distill(
                student,
                x,
                targets,
                steps=self.steps,
                batch_size=self.batch_size,
                lr=self.lr,
                temperature=self.temperature,
                gen=seeded_generator(self.seed, server_round, sum(map(ord, arch))),
                device=self.device,
            )
            state.models[arch] = module_arrays(student)
            report.metrics[f"distill-loss/{arch}"] = loss

    def describe(self, num_images: int) -> str:
        return f"{num_images} images, {self.steps} steps, lr {self.lr:g}, T {self.temperature:g}"
