"""``docs/configuration.md``, generated from the schema (a test keeps the file in step).

Regenerate with ``python -m server_app.reference > docs/configuration.md``.
"""

from __future__ import annotations

from .config import SECTIONS
from .methods import METHODS

HEADER = """# Configuration reference

Generated from the settings' declarations by `python -m server_app.reference`; do not edit by
hand. Every key can be set in an experiment YAML file (`experiment=...`) or with
`--run-config 'key=value ...'` (TOML values); precedence, lowest first: these defaults, the
experiment file, explicit values. Floats must be finite. *Nodes* says whether the key is sent to
the ClientApps: `all` (every run), `method` (runs of a method that uses the section), or `-`
(server only; the data keys travel as `data.*`).
"""


def _format(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_reference() -> str:
    users = {
        section.name: [m.name for m in METHODS.values() if section in m.sections]
        for section in SECTIONS
    }
    lines = [HEADER]
    for section in SECTIONS:
        lines.append(f"## {section.name}\n")
        if users[section.name]:
            lines.append(f"Used by: {', '.join(users[section.name])}.\n")
        if section.doc:
            lines.append(f"{section.doc}\n")
        lines.append("| key | default | allowed | nodes | meaning |")
        lines.append("|---|---|---|---|---|")
        for s in section.settings:
            allowed = ", ".join(s.choices) if s.choices else s.bounds()
            travel = {"server": "-", "all": "all", "method": "method"}[s.travel]
            doc = s.doc.replace("|", "\\|")
            lines.append(f"| `{s.key}` | `{_format(s.default)}` | {allowed} | {travel} | {doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_reference(), end="")
