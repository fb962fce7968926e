"""Which architecture each client trains: named presets, one name, or a list cycled over clients."""

from __future__ import annotations

from protocol.settings import Section, Setting

from .zoo import ARCHITECTURES

MODEL_SETTINGS = Section(
    "models",
    (
        Setting(
            "models",
            "cnn-small",
            "one architecture, a preset (heterogeneous, heterogeneous-large) or a comma list "
            "cycled over partition ids",
            travel="all",
        ),
    ),
)

PRESETS: dict[str, tuple[str, ...]] = {
    # Cheap mix for 28x28 data on CPUs: three genuinely different families.
    "heterogeneous": ("cnn-small", "mlp", "cnn-large"),
    # Heavier mix (CIFAR-scale or GPU).
    "heterogeneous-large": ("resnet8", "cnn-large", "mobilenet", "resnet18"),
}


def parse_assignment(models: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Normalise a ``models`` setting to a tuple of architecture names.

    Accepts a preset name (:data:`PRESETS`), one architecture name (homogeneous), a
    comma-separated string or a YAML list of names (cycled over partition ids).

    Raises
    ------
    ValueError
        Naming the offending entry and the allowed values.
    """
    if isinstance(models, str):
        if models in PRESETS:
            return PRESETS[models]
        names = tuple(m.strip() for m in models.split(",") if m.strip())
    else:
        names = tuple(str(m).strip() for m in models)
    if not names:
        raise ValueError("models is empty; give a preset or architecture names")
    for name in names:
        if name not in ARCHITECTURES:
            raise ValueError(
                f"models: architecture {name!r} is unknown; allowed: "
                f"{', '.join(ARCHITECTURES)} or presets {', '.join(PRESETS)}"
            )
    return names


def architecture_for(partition_id: int, assignment: tuple[str, ...]) -> str:
    """Round-robin: client i trains ``assignment[i % len(assignment)]``."""
    return assignment[partition_id % len(assignment)]
