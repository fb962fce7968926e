"""FedGen: data-free knowledge distillation through a generator in feature space [Zhu, Hong,
Zhou, ICML 2021, arXiv:2105.10056].

Nodes train as in FedAvg, except that from round 2 each node's head also learns to classify
features that a server-side generator produces for labels drawn from the federation's label
distribution (``client_app/fedgen.py``). After aggregating, the server trains that generator
(``fedgen-generator-steps`` Adam steps) so that the nodes' heads, the ones they just sent,
classify a generated feature of class y as y: client k's say on class y is its share
``n_ky / n_y`` of the class (the reference code's label weighting), plus a mode-seeking
diversity term. The generator then travels down with the next round's models; it is small
(an MLP from noise + label to ``fedgen-width`` features) and lives in the server state, so it
is checkpointed and a resumed run goes on with it.

Heterogeneous architectures (the HtFLlib adaptation the peers spec names): every model's head
reads ``fedgen-width`` features (``models.features.with_feature_width`` adds a projection where
an architecture's head reads another width), feature extractors are averaged within their
architecture group as in FedAvg, and with ``fedgen-share-head`` (default) the heads of all nodes
are averaged into one head that every group's model carries, so the generator speaks to one
head space. Where we differ from the paper or its code (docs/methods/fedgen.md): the
generator's loss is the per-client weighted cross-entropy of the code, not the paper's
cross-entropy of averaged logits; its output passes a ReLU (the zoo's features are
non-negative); ``fedgen-alpha`` is constant (the code decays its weights per round); the code's
second regulariser (a KL term between real and generated outputs) is not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import nn

from federated_data import Federation
from models.data_free import class_client_weights, diversity_loss, fidelity_loss
from models.features import FeatureGenerator, head_name, with_feature_width
from models.generators import sample_labels
from models.training import seeded_generator
from protocol import GENERATOR_KEY, TRAIN_FEDGEN, arrays_to_record
from protocol.settings import Section, Setting

from .aggregate import all_finite, robust_average
from .base import RoundReport, kept_module, load_arrays, module_arrays
from .fedavg import FedAvg, TrainReply, aggregation_settings
from .state import Arrays, ServerState

GENERATOR_PREFIX = "fedgen-generator/"

FEDGEN_SETTINGS = Section(
    "fedgen",
    (
        Setting(
            "fedgen-alpha",
            1.0,
            "weight of the head's cross-entropy on generated features in the nodes' loss "
            "(0 = FedAvg with a shared-width head)",
            low=0.0,
            travel="method",
        ),
        Setting(
            "fedgen-width",
            128,
            "features every node's head reads and the generator produces (a projection is "
            "added to architectures whose head reads another width; cnn-small's reads 128)",
            low=1,
            travel="method",
        ),
        Setting("fedgen-noise-dim", 32, "generator noise size", low=1, travel="method"),
        Setting("fedgen-generator-hidden", 256, "generator hidden width", low=1, travel="method"),
        Setting(
            "fedgen-generator-steps",
            100,
            "server Adam steps on the generator per round (0 = no generator: FedAvg)",
            low=0,
        ),
        Setting("fedgen-generator-batch", 64, "generated features per generator step", low=2),
        Setting("fedgen-generator-lr", 1e-3, "Adam learning rate of the generator", low=0.0),
        Setting("fedgen-diversity", 1.0, "weight of the generator's diversity term", low=0.0),
        Setting(
            "fedgen-share-head",
            True,
            "average every node's head into one head that all architectures' models carry "
            "(false: heads are averaged within each architecture group, like the extractors)",
        ),
    ),
    "FedGen's server-side feature generator and the nodes' regulariser.",
)


class FedGen(FedAvg):
    """FedAvg per architecture group + a feature-space generator learnt from the nodes' heads.

    Parameters
    ----------
    num_classes : int
    width : int (default: 128)
        ``fedgen-width``: the heads' input width and the generator's output.
    noise_dim : int (default: 32)
    hidden : int (default: 256)
    generator_steps : int (default: 100)
        Generator steps per round; 0 sends no generator (FedAvg with shared-width heads).
    generator_batch : int (default: 64)
    generator_lr : float (default: 1e-3)
    diversity : float (default: 1.0)
    share_head : bool (default: True)
        One head averaged over every node, whatever its architecture.
    device : torch.device | str (default: "cpu")
    **kwargs
        FedAvg's arguments; ``model_fn`` is wrapped to give every model the shared width.
    """

    name = "fedgen"
    train_message_type = TRAIN_FEDGEN

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        num_classes: int,
        width: int = 128,
        noise_dim: int = 32,
        hidden: int = 256,
        generator_steps: int = 100,
        generator_batch: int = 64,
        generator_lr: float = 1e-3,
        diversity: float = 1.0,
        share_head: bool = True,
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        zoo_model = self.model_fn
        self.model_fn = lambda arch: with_feature_width(zoo_model(arch), width)
        self.num_classes = num_classes
        self.width = width
        self.noise_dim = noise_dim
        self.hidden = hidden
        self.generator_steps = generator_steps
        self.generator_batch = generator_batch
        self.generator_lr = generator_lr
        self.diversity = diversity
        self.share_head = share_head
        self.device = torch.device(device)
        self._heads: dict[str, str] = {}  # architecture -> its head's module name

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t│   └── generator: %d noise -> %d -> %d features, %d steps of %d per round, "
            "diversity %g; %s head",
            self.noise_dim,
            self.hidden,
            self.width,
            self.generator_steps,
            self.generator_batch,
            self.diversity,
            "one shared" if self.share_head else "a per-architecture",
        )

    # ----------------------------------------------------------------- messages

    def train_config(self, server_round: int) -> dict[str, Any]:
        """FedAvg's, plus the federation's label distribution, which the nodes sample the
        generator's labels from (the paper's p(y))."""
        totals = self._class_totals(list(self.nodes))
        return {**super().train_config(server_round), "fedgen-label-prior": totals.tolist()}

    def extra_content(self, state: ServerState) -> RecordDict:
        saved = state.data_under(GENERATOR_PREFIX)
        if not saved:
            return RecordDict()  # round 1: no generator yet, the nodes train as in FedAvg
        return RecordDict({GENERATOR_KEY: arrays_to_record(saved)})

    # ----------------------------------------------------------------- after averaging

    def after_aggregation(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        if not replies:
            return
        order = self.by_partition(replies)
        heads = [self._head_of(self.nodes[n].architecture, replies[n][0]) for n in order]
        if self.share_head:
            self._share_head(state, heads, [replies[n][1] for n in order], server_round, report)
        if not self.generator_steps:
            return
        counts = np.array([self.nodes[n].label_counts for n in order], dtype=np.float64)
        generator = self._generator(state)
        gen = seeded_generator(self.seed, server_round, 0xFE6)
        losses = self._train_generator(generator, heads, counts, gen)
        state.put_data_under(GENERATOR_PREFIX, module_arrays(generator))
        report.metrics.update(losses)
        log(
            INFO,
            "Round %d: generator trained on %d heads (fidelity %.3f, its features classified "
            "as their label %.1f%%)",
            server_round,
            len(heads),
            losses["fedgen-fidelity"],
            100 * losses["fedgen-generator-accuracy"],
        )

    def _share_head(
        self,
        state: ServerState,
        heads: list[Arrays],
        examples: list[int],
        server_round: int,
        report: RoundReport,
    ) -> None:
        """Average the nodes' heads (by the run's aggregation) into every group's model."""
        if sum(examples) == 0:
            return
        head = robust_average(heads, examples, self.aggregation, self.robust_fraction)
        if not all_finite(head):
            log(WARNING, "Round %d: the shared head holds NaN or Inf; kept", server_round)
            report.metrics["rejected-aggregate/head"] = 1.0
            return
        for arch, arrays in state.models.items():
            name = self._head_name(arch)
            state.models[arch] = {
                **arrays,
                f"{name}.weight": head["weight"].copy(),
                f"{name}.bias": head["bias"].copy(),
            }

    def _train_generator(
        self,
        generator: FeatureGenerator,
        heads: list[Arrays],
        counts: np.ndarray,
        gen: torch.Generator,
    ) -> dict[str, float]:
        """Adam on fidelity (the weighted heads classify G(noise, y) as y) + diversity."""
        linears = [self._linear(h).to(self.device) for h in heads]
        weights = torch.as_tensor(class_client_weights(counts), device=self.device)
        totals = counts.sum(0)
        prior = totals if totals.sum() > 0 else np.ones(self.num_classes)
        opt = torch.optim.Adam(generator.parameters(), lr=self.generator_lr)
        generator.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            for _ in range(self.generator_steps):
                labels = sample_labels(prior, self.generator_batch, gen).to(self.device)
                noise = torch.randn(self.generator_batch, self.noise_dim, generator=gen)
                noise = noise.to(self.device)
                features = generator(noise, labels)
                logits = [h(features) for h in linears]
                fidelity = fidelity_loss(logits, labels, weights[labels])
                diversity = diversity_loss(noise, features)
                loss = fidelity + self.diversity * diversity
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        accuracy = self._accuracy(generator, linears, weights, prior, gen)
        return {
            "fedgen-fidelity": float(fidelity.detach()),
            "fedgen-diversity": float(diversity.detach()),
            "fedgen-generator-accuracy": accuracy,
        }

    @torch.no_grad()
    def _accuracy(
        self,
        generator: FeatureGenerator,
        linears: Sequence[nn.Module],
        weights: torch.Tensor,
        prior: np.ndarray,
        gen: torch.Generator,
    ) -> float:
        """Share of a fresh batch of features (drawn as the nodes draw them) that the
        class-weighted ensemble of heads labels as the class they were generated for."""
        generator.eval()
        labels = sample_labels(prior, self.generator_batch, gen).to(self.device)
        features = generator.sample(labels, gen)
        w = weights[labels]  # (batch, clients)
        probs = torch.zeros(len(labels), self.num_classes, device=self.device)
        for k, head in enumerate(linears):
            probs += w[:, k : k + 1] * torch.softmax(head(features), 1)
        return float((probs.argmax(1) == labels).float().mean())

    # ----------------------------------------------------------------- helpers

    def _class_totals(self, node_ids: list[int]) -> np.ndarray:
        totals = np.zeros(self.num_classes, dtype=np.float64)
        for n in node_ids:
            totals += np.asarray(self.nodes[n].label_counts, dtype=np.float64)
        return totals

    def _head_name(self, arch: str) -> str:
        if arch not in self._heads:
            self._heads[arch] = head_name(self.model_fn(arch))
        return self._heads[arch]

    def _head_of(self, arch: str, arrays: Arrays) -> Arrays:
        name = self._head_name(arch)
        return {"weight": arrays[f"{name}.weight"], "bias": arrays[f"{name}.bias"]}

    def _linear(self, head: Arrays) -> nn.Linear:
        out_features, in_features = head["weight"].shape
        linear = nn.Linear(in_features, out_features)
        load_arrays(linear, head)
        return linear.requires_grad_(False)

    def _generator(self, state: ServerState) -> FeatureGenerator:
        """The generator of the previous rounds (from the state), or a new one, its
        initialisation seeded by the run's seed."""
        generator = kept_module(
            state,
            GENERATOR_PREFIX,
            lambda: FeatureGenerator(
                self.num_classes, self.width, noise_dim=self.noise_dim, hidden=self.hidden
            ),
            self.seed,
            0xFE6,
        )
        return generator.to(self.device)


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FedGen:
    return FedGen(
        num_classes=fed.num_classes,
        width=cfg.fedgen_width,
        noise_dim=cfg.fedgen_noise_dim,
        hidden=cfg.fedgen_generator_hidden,
        generator_steps=cfg.fedgen_generator_steps,
        generator_batch=cfg.fedgen_generator_batch,
        generator_lr=cfg.fedgen_generator_lr,
        diversity=cfg.fedgen_diversity,
        share_head=cfg.fedgen_share_head,
        device=device,
        **aggregation_settings(cfg, fed),
        **common,
    )
