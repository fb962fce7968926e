"""A node's run state on disk: what is restored, what is kept, and what is never trusted."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import Metadata

from client_app.node_state import node_state, restore, save, saved_rounds
from protocol import CONFIG_KEY, EXPERIMENT_KEY, arrays_to_record, record_to_arrays

EXPERIMENT = "0123456789abcdef"


def message(server_round: int, experiment: str = EXPERIMENT) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="",
        src_node_id=0,
        dst_node_id=1,
        reply_to_message_id="",
        group_id=str(server_round),
        created_at=0.0,
        ttl=60.0,
        message_type="train",
    )
    content = RecordDict({CONFIG_KEY: ConfigRecord({EXPERIMENT_KEY: experiment})})
    return Message(content=content, metadata=metadata)  # type: ignore[call-arg]


def context(state_dir, state: RecordDict | None = None) -> Context:
    node_config = {"partition-id": 4, **({"state-dir": str(state_dir)} if state_dir else {})}
    return Context(
        run_id=1, node_id=1, node_config=node_config, state=state or RecordDict(), run_config={}
    )


def model(value: float) -> RecordDict:
    return RecordDict({"model": arrays_to_record({"w": np.full(3, value, dtype=np.float32)})})


def weights(state: RecordDict) -> float:
    return float(record_to_arrays(state.array_records["model"])["w"][0])


def training(value: float, seen: list[float | None]):
    """A handler that notes the state it found and leaves ``value`` as the node's model."""

    def call_next(msg: Message, ctx: Context) -> Message:
        seen.append(weights(ctx.state) if ctx.state.keys() else None)
        ctx.state = model(value)
        return Message(RecordDict(), reply_to=msg)

    return call_next


def test_a_node_that_starts_empty_restores_its_state_of_the_round_before(tmp_path):
    seen: list[float | None] = []
    for r in (1, 2, 3):  # three rounds, each in a fresh context (a restarted node)
        node_state(message(r), context(tmp_path), training(float(r), seen))
    assert seen == [None, 1.0, 2.0]
    folder = tmp_path / EXPERIMENT / "partition-4"
    assert saved_rounds(folder) == [2, 3]  # the two newest rounds only

    # The server resumed from its round-2 checkpoint, after this node had trained round 3:
    # round 3 runs again from the round-2 state, never from the interrupted round's.
    node_state(message(3), context(tmp_path), training(30.0, seen))
    assert seen[-1] == 2.0
    # Resumed from round 1 instead (an older checkpoint restored): nothing of round 1 is left,
    # so the node starts empty rather than from a later round, and the abandoned rounds go.
    node_state(message(2), context(tmp_path), training(20.0, seen))
    assert seen[-1] is None
    assert saved_rounds(folder) == [2]


def test_a_node_with_state_in_memory_keeps_it(tmp_path):
    seen: list[float | None] = []
    node_state(message(1), context(tmp_path), training(1.0, seen))
    node_state(message(2), context(tmp_path, model(7.0)), training(2.0, seen))
    assert seen == [None, 7.0]


@pytest.mark.parametrize(
    "state_dir,experiment",
    [
        (None, EXPERIMENT),  # no state-dir: nothing on disk
        ("dir", "../../etc"),  # an id that is not the server's hex never names a folder
        ("dir", ""),
    ],
)
def test_nothing_is_written_without_a_state_dir_or_a_valid_experiment_id(
    tmp_path, state_dir, experiment
):
    seen: list[float | None] = []
    where = tmp_path / state_dir if state_dir else None
    for r in (1, 2):
        node_state(message(r, experiment), context(where), training(float(r), seen))
    assert seen == [None, None]
    assert not any(tmp_path.rglob("*.pb"))


def test_an_unreadable_file_is_never_trusted(tmp_path, capsys):
    folder = tmp_path / "f"
    save(folder, 1, model(1.0))
    (folder / "round-1.pb").write_bytes(b"\xff not a record")
    assert restore(folder, 2) is None
    assert "unreadable" in capsys.readouterr().err
    assert restore(tmp_path / "missing", 2) is None
