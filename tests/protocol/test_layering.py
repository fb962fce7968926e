"""The two apps meet only in :mod:`protocol`: no client module imports the server's packages,
and the protocol imports neither app."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "client_app": ("strategies", "server_app"),
    "protocol": ("strategies", "server_app", "client_app"),
}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_the_other_side(package):
    offending = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).glob("*.py"))
        for name in sorted(_imported_modules(path))
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert offending == []


def test_the_check_sees_imports():
    assert "strategies" in _imported_modules(ROOT / "server_app" / "methods.py")
