"""Functions in the core packages stay short (the redesign's bound is about 60 lines; this
check allows 70 so that a docstring does not decide)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ("server_app", "client_app", "strategies", "models", "federated_data", "protocol")
LIMIT = 70


def test_no_function_in_the_core_packages_is_longer_than_the_limit():
    long = []
    for package in CORE:
        for path in sorted((ROOT / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                    if lines > LIMIT:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {lines}")
    assert long == []
