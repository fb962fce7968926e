"""FedProto end to end on digits: private heterogeneous models, only class prototypes travel."""

from federate import rows, run

from protocol import CLASS_PROTOTYPES_KEY, TRAIN_PROTO, arrays_to_record

PROTO = {"method": "fedproto", "models": "heterogeneous", "num-server-rounds": 2, "alpha": 0.3}


def test_fedproto_pools_prototypes_and_they_change_training(tmp_path):
    pooled = run(tmp_path / "fedproto", PROTO)
    alone = run(tmp_path / "alone", {**PROTO, "proto-lambda": 0.0})
    assert pooled["status"] == alone["status"] == "completed"
    proto_rows, alone_rows = rows(pooled), rows(alone)
    # Round 1 has no global prototypes yet: both runs train identically. From round 2 they
    # enter the loss of every node.
    assert proto_rows[0]["train"] == alone_rows[0]["train"]
    assert (
        proto_rows[1]["train"]["mean-test-accuracy"] != alone_rows[1]["train"]["mean-test-accuracy"]
    )
    assert set(pooled["final-per-model"]) == {"p0-cnn-small", "p1-mlp", "p2-cnn-large"}
    for r in proto_rows:
        for down, up in r["bytes-per-node"].values():
            # 10 x 128 float32 prototypes + 10 counts (+ metrics and config): a few kB, against
            # hundreds of kB for any of the models
            assert up < 9_000 and down < 9_000
    # The global prototypes travel from round 2, and only when there is something to pull to.
    sent = [sum(d for d, _ in r[1]["bytes-per-node"].values()) for r in (proto_rows, alone_rows)]
    assert sent[0] - sent[1] >= 3 * (10 * 128 * 4 + 80)
    # Every client learns well above chance (0.1) on its own held-out data.
    assert proto_rows[-1]["train"]["mean-local-accuracy"] > 0.5


def test_a_reply_with_prototypes_of_the_wrong_width_is_dropped_and_the_round_goes_on(tmp_path):
    def narrow(msg, reply):
        if msg.metadata.message_type == TRAIN_PROTO and msg.metadata.dst_node_id == 1000:
            record = reply.content[CLASS_PROTOTYPES_KEY]
            reply.content[CLASS_PROTOTYPES_KEY] = arrays_to_record(
                {
                    "prototypes": record["prototypes"].numpy()[:, :64].copy(),
                    "counts": record["counts"].numpy().copy(),
                }
            )
        return reply

    summary = run(tmp_path, {**PROTO, "num-server-rounds": 1}, hook=narrow)
    (row,) = rows(summary)
    assert summary["status"] == "completed"
    assert row["num-ok"] == 2
    assert any("expected float32[10, 128]" in str(why) for why in row["dropped"].values())
