import numpy as np
import pytest
from flwr.app import Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from protocol import arrays_to_record, record_to_arrays, serialized_size
from strategies.state import ServerState
from strategies.validation import InvalidReply, check_arrays, check_train_reply

EXPECTED = {"w": np.zeros((2, 3), np.float32), "n": np.array(0, np.int64)}


@pytest.fixture(autouse=True)
def _task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def _reply(arrays, metrics):
    msg = Message(RecordDict(), dst_node_id=7, message_type="train", group_id="1")
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def test_valid_reply_passes():
    arrays = {"w": np.ones((2, 3), np.float32), "n": np.array(3, np.int64)}
    out, n, metrics = check_train_reply(
        _reply(arrays_to_record(arrays), {"num-examples": 4}), EXPECTED
    )
    assert n == 4 and np.array_equal(out["w"], arrays["w"]) and metrics["num-examples"] == 4


@pytest.mark.parametrize(
    ("arrays", "metrics", "reason"),
    [
        (
            {"w": np.full((2, 3), np.nan, np.float32), "n": np.array(1)},
            {"num-examples": 4},
            "NaN",
        ),
        (
            {"w": np.ones((3, 2), np.float32), "n": np.array(1)},
            {"num-examples": 4},
            "expected",
        ),
        (
            {"w": np.ones((2, 3), np.float64), "n": np.array(1)},
            {"num-examples": 4},
            "float64",
        ),
        ({"w": np.ones((2, 3), np.float32)}, {"num-examples": 4}, "keys differ"),
        (
            {"w": np.ones((2, 3), np.float32), "n": np.array(1)},
            {"num-examples": -2},
            "num-examples",
        ),
        (
            {"w": np.ones((2, 3), np.float32), "n": np.array(1)},
            {"num-examples": 1.5},
            "num-examples",
        ),
        (
            {"w": np.ones((2, 3), np.float32), "n": np.array(1)},
            {"num-examples": 3, "loss": float("inf")},
            "metrics",
        ),
    ],
)
def test_bad_replies_are_rejected_with_a_reason(arrays, metrics, reason):
    with pytest.raises(InvalidReply, match=reason):
        check_train_reply(_reply(arrays_to_record(arrays), metrics), EXPECTED)


def test_error_reply_and_wrong_record_type():
    msg = Message(RecordDict(), dst_node_id=7, message_type="train", group_id="1")
    with pytest.raises(InvalidReply, match="boom"):
        check_train_reply(Message(Error(code=2, reason="boom"), reply_to=msg), EXPECTED)
    with pytest.raises(InvalidReply, match="not an ArrayRecord"):
        check_arrays(MetricRecord({"a": 1}), EXPECTED)


def test_serialized_size_tracks_payload():
    small = RecordDict({"arrays": arrays_to_record({"w": np.zeros(10, np.float32)})})
    big = RecordDict({"arrays": arrays_to_record({"w": np.zeros(10_000, np.float32)})})
    assert serialized_size(big) - serialized_size(small) == pytest.approx(9_990 * 4, rel=0.01)
    assert serialized_size(big) >= 40_000


def test_array_record_round_trip_keeps_order_and_dtype():
    arrays = {"b": np.arange(3, dtype=np.int64), "a": np.ones((2, 2), np.float32)}
    back = record_to_arrays(arrays_to_record(arrays))
    assert list(back) == ["b", "a"] and back["b"].dtype == np.int64


def test_server_state_round_trip(tmp_path):
    state = ServerState(
        round=3, models={"mlp": dict(EXPECTED)}, data={"s/x": np.ones(2)}, extra={"k": [1, 2]}
    )
    state.save(tmp_path / "c.npz")
    back = ServerState.load(tmp_path / "c.npz")
    assert back.round == 3 and back.extra == {"k": [1, 2]}
    assert np.array_equal(back.data["s/x"], np.ones(2))
    assert list(back.models["mlp"]) == ["w", "n"] and back.models["mlp"]["n"].dtype == np.int64
