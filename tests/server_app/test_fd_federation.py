"""FD end to end on digits: private heterogeneous models, only class-mean logits travel."""

from federate import rows, run

FD = {"method": "fd", "models": "heterogeneous", "num-server-rounds": 2, "alpha": 0.3}


def test_fd_relays_class_means_and_they_change_training(tmp_path):
    distilled = run(tmp_path / "fd", FD)
    alone = run(tmp_path / "alone", {**FD, "fd-lambda": 0.0})
    assert distilled["status"] == alone["status"] == "completed"
    fd_rows, alone_rows = rows(distilled), rows(alone)
    # Round 1 has no peer means yet: both runs train identically. From round 2 the peers'
    # class means enter the loss of every node.
    assert fd_rows[0]["train"] == alone_rows[0]["train"]
    assert fd_rows[1]["train"]["mean-test-accuracy"] != alone_rows[1]["train"]["mean-test-accuracy"]
    assert set(distilled["final-per-model"]) == {"p0-cnn-small", "p1-mlp", "p2-cnn-large"}
    for r in fd_rows:
        for down, up in r["bytes-per-node"].values():
            # 10 x 10 float32 means + 10 counts (+ metrics and config): a few kB, against
            # hundreds of kB for any of the models
            assert up < 4_000 and down < 4_000
    # The peers' means travel from round 2, and only when there is something to distil.
    sent = [sum(d for d, _ in r[1]["bytes-per-node"].values()) for r in (fd_rows, alone_rows)]
    assert sent[0] - sent[1] >= 3 * (400 + 80)
    # Every client learns well above chance (0.1) on its own held-out data.
    assert fd_rows[-1]["train"]["mean-local-accuracy"] > 0.5
