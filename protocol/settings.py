"""Run-config settings, each declared once beside the component that owns it.

A :class:`Setting` carries everything about one key: type (that of its default), default,
range or choices, one line of documentation and whether it travels to the nodes. Defaults,
validation, the typed config objects, the nodes' config and ``docs/configuration.md`` are all
derived from the declarations; ``pyproject.toml``'s ``[tool.flwr.app.config]`` (which Flower
needs) is checked against them by a test.

Floats must be finite: a NaN or infinite value is refused for every key (no setting means
anything by them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Value = bool | int | float | str
# Where a key goes besides the server: nowhere, to the nodes of every run, or only to the
# nodes of runs whose method owns the key's section.
Travel = Literal["server", "all", "method"]


class ConfigError(ValueError):
    """An invalid setting; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Setting:
    """One run-config key.

    Parameters
    ----------
    key : str
        kebab-case name.
    default : bool | int | float | str
        Also fixes the type: a value of another type is refused (an int is accepted for a
        float key).
    doc : str
        One line for the configuration reference.
    low, high : float | None
        Bounds; ``low`` is exclusive when ``low_open``.
    choices : tuple[str, ...] | None
        The allowed values of a string key.
    travel : "server" | "all" | "method"
        Whether the key is sent to the nodes (see :data:`Travel`).
    """

    key: str
    default: Value
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    travel: Travel = "server"

    @property
    def attribute(self) -> str:
        return self.key.replace("-", "_")

    def check(self, value: Any) -> Value:
        """``value`` converted to the key's type; raises :class:`ConfigError` naming the key."""
        key, default = self.key, self.default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{key}={value!r} must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key}={value!r} must be an integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{key}={value!r} must be a number")
            if not math.isfinite(value):
                raise ConfigError(f"{key}={value!r} must be a finite number")
            value = float(value)
        elif not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"{key}={value!r} is not allowed; choose one of: {', '.join(self.choices)}"
            )
        self._check_range(value)
        return value  # type: ignore[no-any-return]

    def _check_range(self, value: Any) -> None:
        low, high = self.low, self.high
        too_low = low is not None and (value <= low if self.low_open else value < low)
        if too_low or (high is not None and value > high):
            raise ConfigError(f"{self.key}={value!r} is out of range; allowed: {self.bounds()}")

    def bounds(self) -> str:
        """The range in interval notation, e.g. ``(0, inf]``; empty when unbounded."""
        if self.low is None and self.high is None:
            return ""
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{lo}, {hi}]"


@dataclass(frozen=True)
class Section:
    """The settings of one component (data, local training, a method, ...)."""

    name: str
    settings: tuple[Setting, ...]
    doc: str = ""
    # Checks across this section's keys (and any other resolved value); raises ConfigError.
    check: Callable[[Mapping[str, Any]], None] | None = None

    def __getitem__(self, key: str) -> Setting:
        for setting in self.settings:
            if setting.key == key:
                return setting
        raise KeyError(key)

    def default(self, key: str) -> Any:
        return self[key].default

    def values(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """This section's keys read from a message config (the nodes' side), defaults where a
        key is absent, each converted to its type."""
        return {s.key: s.check(config.get(s.key, s.default)) for s in self.settings}


def merge_sections(sections: Iterable[Section]) -> dict[str, Setting]:
    """key -> setting over all sections; a key declared twice is a programming error."""
    out: dict[str, Setting] = {}
    for section in sections:
        for setting in section.settings:
            if setting.key in out:
                raise ValueError(f"run-config key {setting.key!r} is declared twice")
            out[setting.key] = setting
    return out
