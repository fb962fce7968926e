"""The method registry: a method is a strategy module, a client module and its settings,
registered here by name. The runner never names a method.

Adding one (``docs/architecture.md`` walks through it with FedProx):

1. ``strategies/<name>.py``: the strategy, its :class:`~protocol.settings.Section` of settings,
   ``build(cfg, fed, device, common)`` and, if some settings constrain each other,
   ``check_settings(values)``;
2. its message types in :mod:`protocol` and its handlers in ``client_app/`` (only if it needs
   messages other than ``query.info`` and ``train``);
3. one :class:`Method` line below, and the section's keys in ``pyproject.toml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from models.generators import GENERATOR_SETTINGS
from models.training import KD_SETTINGS
from protocol.settings import Section
from strategies import (
    dense,
    fd,
    fedavg,
    feddf,
    fedftg,
    fedgen,
    fedh2l,
    fedproto,
    fedprox,
    fmd,
    mosaic,
    prism,
)
from strategies.base import Builder


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes
    ----------
    name : str
        The value of the ``method`` setting.
    build : Builder
        Builds the strategy from the resolved config.
    sections : tuple[Section, ...]
        The settings it reads; their ``travel="method"`` keys go to its nodes only.
    check : Callable[[Mapping[str, Any]], None] | None
        Cross-key validation of the resolved values (raises ``ConfigError``).
    node_extras : Callable[[Any], dict[str, Any]] | None
        Values derived from the config that its nodes need (PRISM: the DP noise multiplier).
    node_state : bool
        Its nodes keep state between rounds (a private model, an optimiser) in
        ``context.state``: a resume continues them only where nodes have a ``state-dir``.
    """

    name: str
    build: Builder
    sections: tuple[Section, ...] = ()
    check: Callable[[Mapping[str, Any]], None] | None = None
    node_extras: Callable[[Any], dict[str, Any]] | None = None
    node_state: bool = False


_DISTILL = feddf.DISTILL_SETTINGS
_AVG = fedavg.AGGREGATION_SETTINGS
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("fedavg", fedavg.build, (_AVG,)),
        Method("fedprox", fedprox.build, (fedprox.FEDPROX_SETTINGS, _AVG)),
        Method("feddf", feddf.build, (_DISTILL, _AVG), feddf.check_settings),
        Method("fedftg", fedftg.build, (fedftg.FEDFTG_SETTINGS, _AVG)),
        Method("dense", dense.build, (dense.DENSE_SETTINGS, _AVG)),
        Method("fedgen", fedgen.build, (fedgen.FEDGEN_SETTINGS, _AVG)),
        Method(
            "fedh2l",
            fedh2l.build,
            (fedh2l.FEDH2L_SETTINGS,),
            fedh2l.check_settings,
            node_state=True,
        ),
        Method("fd", fd.build, (fd.FD_SETTINGS,), node_state=True),
        Method("fedproto", fedproto.build, (fedproto.FEDPROTO_SETTINGS,), node_state=True),
        Method(
            "fmd", fmd.build, (fmd.FMD_SETTINGS, KD_SETTINGS, _DISTILL, _AVG), fmd.check_settings
        ),
        Method(
            "mosaic",
            mosaic.build,
            (mosaic.MOSAIC_SETTINGS, GENERATOR_SETTINGS, _DISTILL, _AVG),
            mosaic.check_settings,
        ),
        Method(
            "prism",
            prism.build,
            (prism.PRISM_SETTINGS,),
            prism.check_settings,
            prism.node_extras,
            node_state=True,
        ),
        Method(
            "fedavg-generator",
            prism.build_dense,
            (prism.PRISM_SETTINGS,),
            prism.check_settings,
            prism.node_extras,
            node_state=True,
        ),
    )
}


def method_sections() -> list[Section]:
    """Every method's sections, each once, in registry order."""
    out: list[Section] = []
    for method in METHODS.values():
        out += [s for s in method.sections if s not in out]
    return out
