"""The client gate's reply parser: counts within what the node holds, every candidate scored;
its blended candidates."""

import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from protocol import METRICS_KEY
from strategies.mosaic import Mosaic, _parse_scores, _verdict, parse_blends
from strategies.validation import InvalidReply

TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # to build Messages
NAMES = ["pre/mlp", "post/mlp"]


def _reply(metrics):
    msg = Message(RecordDict(), dst_node_id=7, message_type="query.evaluate", group_id="1")
    return Message(RecordDict({METRICS_KEY: MetricRecord(metrics)}), reply_to=msg)


def test_accuracies_are_correct_counts_over_the_examples_scored():
    reply = _reply(
        {"num-examples": 500, "evaluated": 200, "correct/pre/mlp": 50, "correct/post/mlp": 150}
    )
    assert _parse_scores(reply, NAMES, 500) == (500, {"pre/mlp": 0.25, "post/mlp": 0.75})


def test_a_node_without_examples_weighs_nothing():
    reply = _reply({"num-examples": 0, "evaluated": 0})
    assert _parse_scores(reply, NAMES, 0) == (0, {"pre/mlp": 0.0, "post/mlp": 0.0})


@pytest.mark.parametrize(
    ("metrics", "error"),
    [
        (
            {"num-examples": 900, "evaluated": 10, "correct/pre/mlp": 1, "correct/post/mlp": 1},
            "exceeds the 500 examples",
        ),
        (
            {"num-examples": 500, "evaluated": 600, "correct/pre/mlp": 1, "correct/post/mlp": 1},
            "evaluated=600 is not a count in \\[0, 500\\]",
        ),
        ({"num-examples": 500, "evaluated": 0}, "evaluated=0 of num-examples=500"),
        (
            {"num-examples": 500, "evaluated": 10, "correct/pre/mlp": 11, "correct/post/mlp": 1},
            "correct/pre/mlp=11 is not a count in \\[0, 10\\]",
        ),
        ({"num-examples": 500, "evaluated": 10, "correct/pre/mlp": 1}, "correct/post/mlp=None"),
        (
            {"num-examples": 500, "evaluated": 10, "correct/pre/mlp": 0.5, "correct/post/mlp": 1},
            "correct/pre/mlp=0.5",
        ),
    ],
)
def test_a_reply_that_could_skew_the_verdict_is_named_and_refused(metrics, error):
    with pytest.raises(InvalidReply, match=error):
        _parse_scores(_reply(metrics), NAMES, 500)


def test_only_a_strictly_better_candidate_is_kept():
    assert _verdict(3, "test", 0.5, 0.5)["gate"] == "rejected"  # a tie keeps FedAvg
    assert _verdict(3, "test", 0.4, 0.5) == {
        "gate": "rejected",
        "gate-accepted": 0,
        "gate-teacher-accuracy": 0.4,
        "gate-pre-accuracy": 0.5,
    }
    assert _verdict(3, "test", 0.6, 0.5)["gate-accepted"] == 1


def test_blend_weights_are_parsed_and_checked():
    assert parse_blends("") == ()
    assert parse_blends(" 0.25, 0.5 ,") == (0.25, 0.5)
    with pytest.raises(ValueError, match="0 is not in"):
        parse_blends("0")


def test_blends_belong_to_the_client_gate():
    kwargs = {
        "num_classes": 10,
        "input_shape": (1, 28, 28),
        "generator_config": None,
        "test": None,
        "model_fn": None,
        "node_config": {},
    }
    with pytest.raises(ValueError, match="event_gate='clients'"):
        Mosaic(**kwargs, gate_blends=(0.5,))
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        Mosaic(**kwargs, event_gate="clients", gate_blends=(1.5,))
    gate = Mosaic(**kwargs, event_gate="clients", gate_blends=(0.5, 0.25, 0.5))
    assert gate.gate_blends == (0.25, 0.5)
