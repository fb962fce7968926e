"""benchmarks/mosaic.py's table: every column sits under its own name (a header once missed a
method and shifted every later column)."""

import json
from pathlib import Path

import numpy as np

from benchmarks import mosaic

SAVED = json.loads((Path(mosaic.__file__).parent / "results" / "mosaic.json").read_text())


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_every_row_has_as_many_cells_as_the_header_and_the_separator():
    header, separator, *rows = mosaic.table(SAVED["results"])
    assert rows
    assert separator.count("---") == len(_cells(header))
    for row in rows:
        assert len(_cells(row)) == len(_cells(header)), row


def test_each_method_column_holds_that_methods_mean_final_accuracy():
    header, _, *rows = mosaic.table(SAVED["results"])
    names = _cells(header)
    checked = 0
    for row in rows:
        cells = dict(zip(names, _cells(row), strict=True))
        alpha, models = float(cells["alpha"]), cells["models"]
        for method in mosaic.METHODS:
            runs = [
                r["final-accuracy"]
                for r in SAVED["results"]
                if (r["alpha"], r["models"], r["method"]) == (alpha, models, method)
            ]
            shown = cells[mosaic.COLUMN_NAMES.get(method, method)]
            if not runs:
                assert shown == "-"
                continue
            assert abs(float(shown.split(" ")[0]) - float(np.mean(runs))) <= 5e-4 + 1e-9
            checked += 1
    assert checked > 20
