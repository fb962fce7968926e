"""The ServerApp's own push/pull loop (fast polling, round trips, timeouts) and the nodes'
timing records."""

import time

import numpy as np
import pytest
from flwr.app import Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from protocol import TIMING_KEY
from strategies.base import RoundReport, _node_timing, poll_wait, send_and_receive
from strategies.fedavg import FedAvg


@pytest.fixture(autouse=True)
def _task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


class _SlowGrid:
    """Replies to node n become available after ``delay[n]`` seconds; counts pulls."""

    def __init__(self, delay: dict[int, float]) -> None:
        self.delay = delay
        self.pulls = 0
        self.ready: dict[str, tuple[float, Message]] = {}

    def push_messages(self, messages):
        ids = []
        t0 = time.monotonic()
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id  # as Flower's grids do
            node = msg.metadata.dst_node_id
            if node in self.delay:
                reply = Message(RecordDict({"m": MetricRecord({"node": node})}), reply_to=msg)
                self.ready[msg.object_id] = (t0 + self.delay[node], reply)
            ids.append(msg.object_id)
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        now = time.monotonic()
        out = [r for i, (t, r) in self.ready.items() if i in message_ids and t <= now]
        for r in out:
            del self.ready[r.metadata.reply_to_message_id]
        return out


def _messages(nodes):
    return [Message(RecordDict(), dst_node_id=n, message_type="train", group_id="1") for n in nodes]


def test_replies_arrive_within_a_poll_interval_not_flowers_3_s():
    grid = _SlowGrid({1: 0.0, 2: 0.3})
    t0 = time.monotonic()
    out = send_and_receive(grid, _messages([1, 2]), timeout=10.0, poll_interval=0.05)
    assert time.monotonic() - t0 < 1.0  # Flower's send_and_receive would take >= 3 s here
    trips = {r.metadata.src_node_id: t for r, t in out}
    assert set(trips) == {1, 2}
    assert trips[1] < 0.1 and 0.3 <= trips[2] < 0.6
    assert grid.pulls >= 3


def test_pulls_thin_out_in_a_long_phase_but_notice_a_reply_at_most_5_percent_late():
    assert poll_wait(0.5) == 0.1 and poll_wait(4.0) == pytest.approx(0.2)
    assert poll_wait(600.0) == 1.0  # at most one pull (one log line) per second
    assert poll_wait(600.0, poll_interval=5.0) == 5.0  # a slower setting is kept
    grid = _SlowGrid({1: 6.0})
    out = send_and_receive(grid, _messages([1]), timeout=30.0, poll_interval=0.1)
    (trip,) = [t for _, t in out]
    assert 6.0 <= trip < 6.0 * 1.05 + 0.05
    assert grid.pulls < 45  # every 0.1 s would be 60


def test_timeout_returns_the_replies_that_arrived():
    grid = _SlowGrid({1: 0.0})  # node 2 never answers
    t0 = time.monotonic()
    out = send_and_receive(grid, _messages([1, 2]), timeout=0.4, poll_interval=0.05)
    assert 0.4 <= time.monotonic() - t0 < 1.0
    assert [r.metadata.src_node_id for r, _ in out] == [1]


def test_a_grid_without_push_pull_is_asked_synchronously():
    class _Synchronous:
        def push_messages(self, messages):
            raise NotImplementedError

        def send_and_receive(self, messages, *, timeout):
            return [Message(RecordDict(), reply_to=m) for m in messages]

    out = send_and_receive(_Synchronous(), _messages([4, 5]), timeout=1.0)
    assert sorted(r.metadata.src_node_id for r, _ in out) == [4, 5]


def test_timing_record_is_read_and_bad_values_are_ignored():
    content = RecordDict(
        {
            TIMING_KEY: MetricRecord(
                {"startup": 1.5, "handler": 2, "load": float("nan"), "imports": -1.0}
            )
        }
    )
    assert _node_timing(content) == {"startup": 1.5, "handler": 2.0}
    assert _node_timing(RecordDict()) == {}


def test_exchange_records_round_trip_and_node_timing_per_partition():
    grid = _SlowGrid({1: 0.0, 2: 0.0})
    strategy = FedAvg(model_fn=lambda arch: None, node_config={}, poll_interval=0.01)

    def parse(reply):
        return reply.content["m"]["node"]

    ex = strategy.exchange(grid, {1: RecordDict(), 2: RecordDict()}, "train", 1, parse)
    assert ex.replies == {1: 1, 2: 2}
    assert set(ex.seconds) == {1, 2} and all("round-trip" in s for s in ex.seconds.values())
    report = RoundReport()
    report.add(ex, {1: 10, 2: 20})
    report.add(ex, {1: 10, 2: 20})  # a second phase adds up
    assert set(report.seconds) == {10, 20}
    assert np.isclose(report.seconds[10]["round-trip"], 2 * ex.seconds[1]["round-trip"])


def test_a_superlink_error_reply_for_a_dead_node_is_that_node_s_drop():
    """When a node dies, the SuperLink answers its message with an error from node id 1."""

    class _DeadNodeGrid(_SlowGrid):
        def push_messages(self, messages):
            ids = super().push_messages(messages)
            for msg in messages:
                if msg.metadata.dst_node_id == 2:
                    error = Message(Error(code=3, reason="node 2 is offline"), reply_to=msg)
                    error.metadata.__dict__["_src_node_id"] = 1  # sent by the SuperLink
                    self.ready[msg.object_id] = (0.0, error)
            return ids

    strategy = FedAvg(model_fn=lambda arch: None, node_config={}, poll_interval=0.01)
    ex = strategy.exchange(
        _DeadNodeGrid({1: 0.0}),
        {1: RecordDict(), 2: RecordDict()},
        "train",
        1,
        lambda reply: reply.content["m"]["node"],
    )
    assert ex.replies == {1: 1}
    assert "node 2 is offline" in ex.dropped[2] and "no reply within" not in ex.dropped[2]
    assert ex.error_codes == {2: 3}
