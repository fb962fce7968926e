"""Replies, configs and checkpoints that must not crash, hijack or silently corrupt a run
(issue 16's defects, each reproduced through the real ServerApp loop and ClientApp)."""

import json

import numpy as np
import pytest
from federate import rows, run
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord

from server_app.config import ConfigError
from server_app.outputs import ResumeError
from strategies.base import FederationError


def _rewrite(message_type, partition, change):
    """A reply hook: ``change(content)`` edits one node's replies of one message type."""

    def hook(msg: Message, reply: Message):
        if msg.metadata.message_type != message_type or not reply.has_content():
            return reply
        content = reply.content
        pid = content["info"]["partition-id"] if "info" in content else None
        if pid is None and "metrics" in content:
            pid = content["metrics"].get("partition-id")
        if pid is None and "seed-set" in content:  # donations carry no metrics
            pid = int(msg.metadata.dst_node_id) - 1000
        if pid != partition:
            return reply
        change(content)
        return Message(content, reply_to=msg)

    return hook


def test_inflated_num_examples_are_dropped_not_averaged(tmp_path):
    def inflate(content):
        content["metrics"] = MetricRecord({**content["metrics"], "num-examples": 10**12})

    s = run(tmp_path, hook=_rewrite("train", 1, inflate))
    assert s["status"] == "completed"
    for row in rows(s):
        assert row["num-ok"] == 2
        assert "exceeds the" in row["dropped"]["1001"]
    assert s["final-accuracy"] > 0.5  # the honest nodes' average, not the inflated node's


def test_fedh2l_accuracy_outside_0_1_is_dropped(tmp_path):
    def boast(content):
        content["metrics"] = MetricRecord({**content["metrics"], "test-accuracy": 1e6})

    s = run(tmp_path, {"method": "fedh2l"}, hook=_rewrite("train.h2l", 0, boast))
    assert s["status"] == "completed" and 0 <= s["final-accuracy"] <= 1
    assert "not in [0, 1]" in rows(s)[0]["dropped"]["1000"]


@pytest.mark.parametrize(
    ("donation", "reason"),
    [
        (np.zeros((4, 3, 32, 32), np.uint8), "the run's are [1, 28, 28]"),
        (np.zeros((3000, 1, 28, 28), np.uint8), "more than the node was asked for (10)"),
    ],
    ids=["foreign-shape", "flood"],
)
def test_a_bad_seed_donation_is_dropped_and_the_run_goes_on(tmp_path, donation, reason):
    def donate(content):
        y = np.zeros(len(donation), np.int64)
        content["seed-set"] = ArrayRecord({"x": Array(donation), "y": Array(y)})

    s = run(tmp_path, {"method": "fedh2l"}, hook=_rewrite("query.seed", 2, donate))
    assert s["status"] == "completed"
    assert reason in rows(s)[0]["dropped"]["1002"]
    assert rows(s)[0]["bytes-down"] < 2_000_000  # no 3,000-image seed set was sent around


@pytest.mark.parametrize("method", ["fedavg", "mosaic"])
def test_label_counts_of_the_wrong_length_drop_the_node_at_discovery(tmp_path, method):
    def short(content):
        info = dict(content["info"])
        info["label-counts"] = [info["num-examples"]]
        content["info"] = ConfigRecord(info)

    overrides = {
        "method": method,
        "generator-steps": 5,
        "generator-width": 4,
        "meta-steps": 5,
        "mosaic-distill-steps": 5,
        "generator-aux-steps": 5,
    }
    s = run(tmp_path, overrides, hook=_rewrite("query.info", 0, short))
    assert s["status"] == "completed"
    assert "label-counts has 1 entries for 10 classes" in rows(s)[0]["dropped"]["1000"]
    run_dir = tmp_path / s["run-dir"].split("/")[-1]
    assert (run_dir / "plots" / "label_distribution.png").exists()


def test_no_usable_node_names_the_discovery_drops(tmp_path):
    def bad(content):
        content["info"] = ConfigRecord({**content["info"], "architecture": "vgg"})

    hooks = [_rewrite("query.info", p, bad) for p in range(3)]

    def all_bad(msg, reply):
        for h in hooks:
            reply = h(msg, reply)
        return reply

    with pytest.raises(FederationError, match=r"0 of 3 sampled nodes.*architecture='vgg'"):
        run(tmp_path, hook=all_bad)
    (run_dir,) = tmp_path.iterdir()
    assert "architecture='vgg'" in json.loads((run_dir / "summary.json").read_text())["error"]


def _completed(tmp_path, rounds=2):
    s = run(tmp_path, {"run-name": "r", "num-server-rounds": rounds, "local-steps": 5})
    return tmp_path / "r", s


def test_resume_with_a_missing_checkpoint_refuses_and_keeps_the_history(tmp_path):
    run_dir, _ = _completed(tmp_path)
    history = (run_dir / "metrics.jsonl").read_text()
    best = (run_dir / "checkpoints" / "best.npz").read_bytes()
    (run_dir / "checkpoints" / "last.npz").unlink()
    with pytest.raises(ResumeError, match=r"holds completed rounds but .*last.npz is missing"):
        run(tmp_path, {"run-name": "r", "local-steps": 5, "resume": True})
    assert (run_dir / "metrics.jsonl").read_text() == history
    assert (run_dir / "checkpoints" / "best.npz").read_bytes() == best


def test_resume_refuses_a_corrupt_checkpoint_an_unknown_run_and_fewer_rounds(tmp_path):
    run_dir, _ = _completed(tmp_path)
    with pytest.raises(ResumeError, match="already completed 2 rounds"):
        run(tmp_path, {"run-name": "r", "local-steps": 5, "num-server-rounds": 1, "resume": True})
    with pytest.raises(ResumeError, match="no run named 'nobody'"):
        run(tmp_path, {"run-name": "nobody", "resume": True})
    last = run_dir / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(ResumeError, match=r"last.npz is unreadable \(BadZipFile"):
        run(tmp_path, {"run-name": "r", "local-steps": 5, "resume": True})


@pytest.mark.parametrize("name", ["../x", "a/b", ".."])
def test_run_names_stay_inside_the_output_directory(tmp_path, name):
    with pytest.raises(ConfigError, match="must be a plain directory name"):
        run(tmp_path, {"run-name": name})


def test_a_node_claiming_a_connected_node_s_partition_is_refused(tmp_path):
    def impostor(content):
        content["info"] = ConfigRecord({**content["info"], "partition-id": 0})

    s = run(tmp_path, hook=_rewrite("query.info", 2, impostor))
    assert s["status"] == "completed"
    assert "partition-id=0 is already node 1000's" in rows(s)[0]["dropped"]["1002"]
    assert rows(s)[0]["num-ok"] == 2


def test_huge_metrics_are_dropped_before_they_overflow_a_mean(tmp_path):
    def huge(content):
        content["metrics"] = MetricRecord({**content["metrics"], "train-loss": 1e308})

    s = run(tmp_path, {"num-server-rounds": 1}, hook=_rewrite("train", 1, huge))
    assert "beyond +-1e+15" in rows(s)[0]["dropped"]["1001"]
    assert np.isfinite(rows(s)[0]["train"]["train-loss"])


def _boost(content):
    """Model poisoning that passes validation: every float weight set to 1e6."""
    arrays = {k: v.numpy().copy() for k, v in content["arrays"].items()}
    for v in arrays.values():
        if v.dtype == np.float32:
            v[...] = 1e6
    content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})


def test_median_aggregation_survives_a_poisoned_model_the_mean_does_not(tmp_path):
    nodes = {"num-partitions": 4, "alpha": 1.0}
    attack = _rewrite("train", 1, _boost)
    # the mean takes the 1e6 weights in; the honest nodes diverge in round 2 and the run stops
    with pytest.raises(FederationError, match="0 valid replies"):
        run(tmp_path / "mean", nodes, hook=attack)
    median = run(tmp_path / "median", {**nodes, "aggregation": "median"}, hook=attack)
    assert median["status"] == "completed" and median["final-accuracy"] > 0.5


def test_prism_masks_far_from_the_expected_density_are_dropped_under_a_bound(tmp_path):
    def all_ones(content):
        ones = np.full(418_192 // 8, 0xFF, dtype=np.uint8)  # 418,192 weights: no padding bits
        content["mask"] = ArrayRecord({"mask": Array(ones)})

    prism = {
        "method": "prism",
        "num-server-rounds": 1,
        "local-steps": 2,
        "batch-size": 16,
        "prism-eval-samples": 60,
        "prism-judge-steps": 20,
        "prism-density-bound": 0.2,
    }
    s = run(tmp_path, prism, hook=_rewrite("train.mask", 1, all_ones))
    assert s["status"] == "completed"
    row = rows(s)[0]
    assert row["num-ok"] == 2
    assert "mask density 1.000 is more than prism-density-bound=0.2" in row["dropped"]["1001"]


def test_fedh2l_agreement_weighting_silences_a_uniform_posterior_peer(tmp_path):
    def uniform(content):
        p = content["posteriors"]["p"].numpy()
        content["posteriors"] = ArrayRecord({"p": Array(np.full_like(p, 1.0 / p.shape[1]))})

    attack = _rewrite("train.h2l", 0, uniform)
    s = run(tmp_path, {"method": "fedh2l", "peer-weighting": "agreement"}, hook=attack)
    assert s["status"] == "completed"
    # round 2 relays round 1's posteriors: the uniform peer weighs 0, the honest ones > 0
    assert rows(s)[1]["train"]["min-peer-weight"] == 0.0
    with pytest.raises(ConfigError, match="relay='loo-mean'"):
        run(tmp_path / "full", {"method": "fedh2l", "peer-weighting": "agreement", "relay": "full"})


def test_the_loss_gate_keeps_the_previous_model_instead_of_a_poisoned_one(tmp_path):
    nodes = {"num-partitions": 4, "alpha": 1.0, "num-server-rounds": 3}
    gated = {**nodes, "loss-gate": 3.0, "gate-per-class": 10}
    s = run(tmp_path, gated, hook=_rewrite("train", 1, _boost))
    assert s["status"] == "completed"  # the mean alone ends this run (test above)
    for row in rows(s):
        assert row["train"]["rejected-aggregate/cnn-small"] == 1.0
        assert np.isfinite(row["loss"])  # the model evaluated (and checkpointed) is the kept one
    # the same gate lets an honest federation learn
    honest = run(tmp_path / "honest", gated)
    assert honest["final-accuracy"] > 0.5
    assert all("rejected-aggregate/cnn-small" not in r["train"] for r in rows(honest))
    with pytest.raises(ConfigError, match="gate-per-class > 0"):
        run(tmp_path / "bad", {"loss-gate": 3.0})


def test_a_reply_over_the_size_bound_is_dropped_before_its_arrays_are_decoded(tmp_path):
    def bloat(content):
        arrays = dict(content["arrays"].items())
        arrays["extra"] = Array(np.zeros(2**20, np.float32))  # 4 MiB
        content["arrays"] = ArrayRecord(arrays)

    s = run(tmp_path, {"max-reply-mb": 2.0}, hook=_rewrite("train", 0, bloat))
    assert s["status"] == "completed"
    for row in rows(s):
        assert row["num-ok"] == 2
        assert "MiB exceeds max-reply-mb=2" in row["dropped"]["1000"]


def test_nodes_that_went_away_at_discovery_are_waited_for_not_fatal(tmp_path):
    """A node the SuperLink reports unavailable (it is restarting) costs a resampling a few
    seconds later, not the run; an answer that is the node's own fault still stops it at once
    (the test above)."""
    first_asked: set[int] = set()

    def unavailable_once(msg: Message, reply: Message):
        node = msg.metadata.dst_node_id
        if msg.metadata.message_type != "query.info" or node in first_asked or node == 1000:
            return reply
        first_asked.add(node)
        return Message(Error(code=5, reason="Node Unavailable"), reply_to=msg)

    s = run(tmp_path, {"min-nodes": 3, "num-server-rounds": 1}, hook=unavailable_once)
    assert s["status"] == "completed"
    (row,) = rows(s)
    assert row["num-ok"] == 3 and row["dropped"] == {}  # the first try's drops were undone
