"""The thread policy: a node's ``threads`` setting, the division of cores among workers, and the
count every reply reports."""

from types import SimpleNamespace

import pytest
import torch

from client_app import threads
from tests.server_app.federate import rows, run


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("raw", "expected"), [(None, 0), (0, 0), (3, 3), ("2", 2)])
def test_node_threads_reads_the_setting(raw, expected):
    config = {} if raw is None else {"threads": raw}
    assert threads.node_threads(config) == expected


@pytest.mark.parametrize("raw", [-1, "many", 1.5, True, float("nan")])
def test_a_bad_threads_setting_is_named(raw):
    with pytest.raises(ValueError, match="threads="):
        threads.node_threads({"threads": raw})


def test_the_mod_sets_torch_threads_before_the_handler():
    seen = []

    def handler(msg, context):
        seen.append(torch.get_num_threads())
        return msg

    torch.set_num_threads(2)
    threads.thread_policy("msg", SimpleNamespace(node_config={"threads": 1}), handler)
    assert seen == [1]
    torch.set_num_threads(2)  # no setting: the process's count is left alone
    threads.thread_policy("msg", SimpleNamespace(node_config={}), handler)
    assert seen == [1, 2]


def test_cores_are_divided_among_workers(monkeypatch):
    monkeypatch.setattr(threads, "host_cores", lambda: 8)
    assert threads.threads_per_worker(0, 3) == 2
    assert threads.threads_per_worker(0, 20) == 1  # never zero
    assert threads.threads_per_worker(5, 3) == 5  # an explicit count wins
    assert threads.threads_per_worker(0, 0) == 8


def test_every_reply_reports_the_threads_it_ran_with(tmp_path):
    nodes = [{"partition-id": i, "num-partitions": 3, "threads": 1} for i in range(3)]
    torch.set_num_threads(2)
    summary = run(tmp_path, {"num-server-rounds": 1, "local-steps": 2}, node_configs=nodes)
    (row,) = rows(summary)
    assert {t["threads"] for t in row["seconds-per-node"].values()} == {1}
