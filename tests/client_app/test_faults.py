"""The bad actor a deployment test uses is caught by the server's reply validation."""

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client_app.faults import inject_fault
from protocol import arrays_to_record
from strategies.validation import InvalidReply, check_train_reply

EXPECTED = {"n": np.array(0, np.int64), "w": np.zeros((2, 3), np.float32)}


@pytest.fixture(autouse=True)
def _task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("nan", "holds NaN or Inf"), ("wrong-shape", r"is int64\[0\], expected int64\[\]")],
)
def test_faulty_weights_are_rejected_by_name(fault, reason):
    arrays = inject_fault(arrays_to_record({k: v + 1 for k, v in EXPECTED.items()}), fault)
    msg = Message(RecordDict(), dst_node_id=7, message_type="train", group_id="1")
    reply = Message(
        RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 4})}), reply_to=msg
    )
    with pytest.raises(InvalidReply, match=reason):
        check_train_reply(reply, EXPECTED)


def test_unknown_fault_is_named():
    with pytest.raises(ValueError, match="inject-fault='boom' is unknown"):
        inject_fault(arrays_to_record(EXPECTED), "boom")
