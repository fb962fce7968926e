"""The FedH2L table's per-seed summary: clients against their own alone-run."""

from __future__ import annotations

from benchmarks import fedh2l


def _row(row: str, seed: int, per_client: dict[str, float]) -> dict:
    return {
        "partition": "dirichlet a=0.1",
        "row": row,
        "seed": seed,
        "mean-accuracy": sum(per_client.values()) / len(per_client),
        "worst-accuracy": min(per_client.values()),
        "per-client": per_client,
        "bytes-amortised": 2e6,
    }


ALONE = [_row("alone", 0, {"a": 0.5, "b": 0.3}), _row("alone", 1, {"a": 0.2, "b": 0.9})]
CODEC = [
    _row("FedH2L delta", 0, {"a": 0.6, "b": 0.2}),
    _row("FedH2L delta", 1, {"a": 0.1, "b": 0.1}),
]


def test_clients_below_their_alone_run_come_from_the_same_seed():
    lines = fedh2l.seed_summary([*ALONE, *CODEC])
    codec = next(line for line in lines if "FedH2L delta" in line)
    # seed 0: b (0.2 < 0.3); seed 1: a and b. Worst client per seed 0.2, 0.1.
    assert "| 1, 2 |" in codec
    assert "0.150 (0.200, 0.100)" in codec
    assert "| 2.000 MB |" in codec


def test_a_grid_without_alone_rows_compares_with_another_tables():
    codec = fedh2l.seed_summary(CODEC)[-1]
    assert "| - |" in codec  # nothing to compare with
    codec = fedh2l.seed_summary(CODEC, reference=ALONE)[-1]
    assert "| 1, 2 |" in codec
    # Another table's rows serve only as the reference: they are not summarised.
    assert not any("| alone |" in line for line in fedh2l.seed_summary(CODEC, reference=ALONE))
