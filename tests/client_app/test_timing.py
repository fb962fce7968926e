"""The ClientApp's timing record: start-up on a process's first message, stages, handler."""

import subprocess
import sys
import time

import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client_app import timing
from protocol import TIMING_KEY


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    monkeypatch.setattr(timing, "_messages_handled", 0)


def _handler(msg, context):
    with timing.stage("load"):
        time.sleep(0.05)
    with timing.stage("load"):  # stages add up
        time.sleep(0.05)
    return Message(RecordDict({"m": MetricRecord({"x": 1.0})}), reply_to=msg)


def test_reply_carries_startup_stages_and_handler_seconds():
    handler = timing.timed(_handler)
    msg = Message(RecordDict(), dst_node_id=3, message_type="train", group_id="1")
    first = handler(msg, None).content[TIMING_KEY]
    assert first["startup"] > 0  # this process's first message: its age at entry
    assert 0.1 <= first["load"] <= first["handler"] < 1.0
    second = handler(msg, None).content[TIMING_KEY]
    assert second["startup"] == 0.0  # a warm process (a simulation actor) has no start-up
    assert "imports" not in second


def test_stage_outside_a_handler_is_harmless():
    with timing.stage("load"):
        pass


def test_process_age_of_a_fresh_process():
    code = (
        "import time; time.sleep(0.5); from client_app.timing import process_age; "
        "print(process_age())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 0.5 <= float(out.stdout) < 10.0
