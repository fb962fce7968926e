"""A node's run state on its own disk, so that a resumed experiment continues its clients.

FedH2L, FD and FedProto train a private model per node, PRISM keeps its optimiser and moment
trackers: they live in Flower's ``context.state``, which belongs to one Flower run and one
SuperNode process. A resumed experiment (``resume=true``) is a new Flower run, and a SuperNode
that restarts starts empty, so without this the clients would start again from fresh models
while the server continues from its checkpoint: a silently mixed run.

With the node config ``state-dir=<folder>`` (set by its operator; ``bouquet grid`` sets it for
its in-process nodes) the ClientApp mod :func:`node_state` writes the context state after every
message to ``<folder>/<experiment-id>/partition-<id>/round-<r>.pb`` (Flower's own protobuf
serialisation, written atomically), where ``r`` is the message's server round and the
experiment id is a random value the server keeps in its checkpoint and sends in every message
(``experiment-id``; a fresh run gets a new one, so no other run's state is ever read). When a
message finds the state empty, the node restores the newest file of a round **before** the
message's round: exactly what it held when the server's checkpoint was written, even when it
had already trained the interrupted round. Only the two newest rounds are kept, oldest removed
first, so a restore never picks an older round while a newer one before the message's existed;
saving a round removes the files of later rounds (a timeline the server abandoned).
A file that cannot be read is reported on stderr and the node starts empty (never a wrong
state). Nothing is written without ``state-dir``.

Known gap: a node that trained round r + 1 before the server's crash, and that the resumed
run does not sample again in round r + 1 but samples later, restores its round r + 1 state.
That state is one the node reached from the server's round r + 1 messages, never a corrupt one,
but the run then differs from an uninterrupted one. It cannot happen in a ``bouquet grid``
(node ids and so the sample are the same after a resume), only where restarted SuperNodes
change the ids a deployment samples from; the fix is to file states per resume of the run.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from protocol import CONFIG_KEY, EXPERIMENT_KEY

if TYPE_CHECKING:
    from flwr.app import Context, Message, RecordDict
    from flwr.clientapp.typing import ClientAppCallable

STATE_DIR_KEY = "state-dir"
KEEP_ROUNDS = 2
# The id names a folder: only what the server's token_hex can produce is accepted.
_EXPERIMENT_ID = re.compile(r"[0-9a-f]{16,64}$")
_FILE = re.compile(r"round-([0-9]+)\.pb$")


def state_folder(msg: Message, context: Context) -> tuple[Path, int] | None:
    """Where this node keeps its state for the message's experiment, and the message's round;
    ``None`` when the node keeps none (no ``state-dir``, no or malformed experiment id, no
    ``partition-id`` or a non-numeric round)."""
    root = str(context.node_config.get(STATE_DIR_KEY, ""))
    if not root or CONFIG_KEY not in msg.content.config_records:
        return None
    experiment = str(msg.content.config_records[CONFIG_KEY].get(EXPERIMENT_KEY, ""))
    partition = context.node_config.get("partition-id")
    if not _EXPERIMENT_ID.match(experiment) or partition is None:
        return None
    try:
        server_round = int(msg.metadata.group_id)
    except ValueError:
        return None
    return Path(root) / experiment / f"partition-{int(partition)}", server_round


def saved_rounds(folder: Path) -> list[int]:
    """The rounds whose state ``folder`` holds, ascending."""
    if not folder.is_dir():
        return []
    found = (_FILE.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def restore(folder: Path, before_round: int) -> RecordDict | None:
    """The newest saved state of a round before ``before_round``; ``None`` when there is none
    or it cannot be read (said on stderr)."""
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    rounds = [r for r in saved_rounds(folder) if r < before_round]
    if not rounds:
        return None
    path = folder / f"round-{rounds[-1]}.pb"
    try:
        proto = ProtoRecordDict()
        proto.ParseFromString(path.read_bytes())
        return recorddict_from_proto(proto)
    except Exception as err:  # a torn or foreign file: start empty rather than trust it
        print(f"[bouquet] node state {path} unreadable ({err}); starting empty", file=sys.stderr)
        return None


def save(folder: Path, server_round: int, state: RecordDict) -> None:
    """Write ``state`` as the round's file (atomically), drop all but the newest
    :data:`KEEP_ROUNDS` rounds, and every later round: those belong to a timeline the server
    abandoned (it resumed from an earlier checkpoint) and must never be restored."""
    from flwr.common.serde import recorddict_to_proto

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round-{server_round}.pb"
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(recorddict_to_proto(state).SerializeToString())
    tmp.replace(path)
    rounds = saved_rounds(folder)
    kept = [r for r in rounds if r <= server_round][-KEEP_ROUNDS:]
    for old in set(rounds) - set(kept):
        (folder / f"round-{old}.pb").unlink(missing_ok=True)


def node_state(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: restore the node's state when it starts empty, save it after the
    message (see the module docstring)."""
    where = state_folder(msg, context)
    if where is None:
        return call_next(msg, context)
    folder, server_round = where
    if not context.state.keys():
        restored = restore(folder, server_round)
        if restored is not None:
            context.state = restored
    reply = call_next(msg, context)
    if context.state.keys():
        save(folder, server_round, context.state)
    return reply
