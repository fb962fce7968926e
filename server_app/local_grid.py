"""An in-process Grid: the real ServerApp logic and ClientApp handlers, no SuperLink, no Ray.

Every message's content is serialised and parsed back, as on the wire, so that a record that
would not survive transport fails here too; a ClientApp exception becomes an error reply, as
Flower's runtimes do. Used by the tests and by benchmarks that compare methods (the framework
overhead benchmark measures real ``flwr run`` simulations instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

ReplyHook = Callable[[Message, Message], Message | None]


class InProcessGrid(Grid):
    """Calls ``client_app`` directly, one persistent :class:`Context` per node.

    Parameters
    ----------
    client_app : ClientApp
    node_configs : list[dict]
        One node config per node (``partition-id``, ``num-partitions``, ...).
    reply_hook : Callable[[Message, Message], Message | None] (optional)
        Sees (instruction, reply) and may return a replacement reply or ``None`` to drop it:
        lets tests inject faults (lost nodes, malformed arrays).
    """

    def __init__(
        self,
        client_app: ClientApp,
        node_configs: list[dict[str, Any]],
        reply_hook: ReplyHook | None = None,
        run_id: int = 1,
    ) -> None:
        self.client_app = client_app
        self.reply_hook = reply_hook
        self.run_id = run_id
        self.contexts = {
            1000 + i: Context(
                run_id=run_id,
                node_id=1000 + i,
                node_config=dict(nc),
                state=RecordDict(),
                run_config={},
            )
            for i, nc in enumerate(node_configs)
        }
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 1

    def set_run(self, run):  # type: ignore[no-untyped-def]
        raise NotImplementedError("InProcessGrid has a fixed run")

    @property
    def run(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError("InProcessGrid has no Run object")

    def create_message(  # type: ignore[override]
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(
            content=content,
            dst_node_id=dst_node_id,
            message_type=message_type,
            group_id=group_id,
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("use send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("use send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            ctx = self.contexts.get(msg.metadata.dst_node_id)
            if ctx is None:
                continue  # unknown node: no reply, as a real Grid would time out
            TaskIdentity.node_id = ctx.node_id
            wire_msg = Message(
                content=_over_the_wire(msg.content),
                dst_node_id=msg.metadata.dst_node_id,
                message_type=msg.metadata.message_type,
                group_id=msg.metadata.group_id,
            )
            try:
                reply = self.client_app(wire_msg, ctx)
                if reply.has_error():  # a handler's typed error reply (protocol.ErrorCode)
                    reply = Message(reply.error, reply_to=msg)
                else:
                    reply = Message(_over_the_wire(reply.content), reply_to=msg)
            except Exception as err:  # the ClientApp crashed: Flower sends an error reply
                reply = Message(Error(code=2, reason=f"{type(err).__name__}: {err}"), reply_to=msg)
            finally:
                TaskIdentity.node_id = 0
            hooked = reply if self.reply_hook is None else self.reply_hook(msg, reply)
            if hooked is not None:
                replies.append(hooked)
        return replies


def _over_the_wire(content: RecordDict) -> RecordDict:
    return recorddict_from_proto(recorddict_to_proto(content))
