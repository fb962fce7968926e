"""A warm worker per node: a deployed node's messages run in one long-lived process.

Flower 1.39 runs every message a SuperNode receives in a fresh ``flwr-clientapp`` process, so
each message pays for importing torch, rebuilding the node's data and building its model
(docs/benchmarks.md, "Deployment overhead"). With the node config ``worker="<socket path>"``
the ClientApp's first mod, :func:`warm_worker`, hands the message and the node's context to a
worker listening on that Unix socket (``python -m client_app.worker --socket PATH``, started
next to each SuperNode by ``scripts/deploy.py``) and returns the worker's reply and context
state. The worker keeps torch, the data and the model code loaded between messages, so only
Flower's own process start-up stays per message.

The worker is an accelerator, never a dependency. When no worker answers (not started,
crashed, killed mid-message) or it runs other code than the ClientApp (a different FAB or
checkout: the sources' fingerprints differ), the message runs in the ClientApp process as it
would without a worker, and stderr says why. Results are the same either way for the same
thread count, since the worker runs the same handlers on the same context.

Wire format: three length-prefixed frames each way over the socket (``multiprocessing``'s
``send_bytes``): a small JSON header, then Flower's protobuf ``Message`` and ``Context``. No
pickle is ever read; the socket file is created mode 0600.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from functools import lru_cache
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import Context, Message

from protocol import TIMING_KEY

from .timing import process_age

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
    from flwr.clientapp.typing import ClientAppCallable

WORKER_KEY = "worker"
# The packages a ClientApp's handlers run; their sources make the fingerprint.
CLIENT_PACKAGES = ("client_app", "protocol", "models", "federated_data")
ROOT = Path(__file__).resolve().parent.parent


class WorkerUnavailable(Exception):
    """No worker took the message; it is to run in the calling process."""


class WorkerRaised(RuntimeError):
    """The handler raised inside the worker (as it would have in the ClientApp process)."""


@lru_cache(maxsize=1)
def code_fingerprint(root: Path = ROOT) -> str:
    """SHA-256 of the client's sources (path and bytes of every ``.py`` file): a worker serves
    only ClientApps that run the same code as it does."""
    digest = hashlib.sha256()
    for package in CLIENT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------ the ClientApp side

_warned: set[str] = set()


def warm_worker(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: run the message in the node's worker when one is configured and answers,
    else here."""
    path = str(context.node_config.get(WORKER_KEY, ""))
    if not path:
        return call_next(msg, context)
    startup = process_age()  # what this fresh process cost before the message could go
    t0 = time.perf_counter()
    try:
        reply, state = forward(Path(path), msg, context)
    except WorkerUnavailable as why:
        if path not in _warned:  # once per process: a deployment message is one process
            _warned.add(path)
            print(f"[bouquet] worker {path}: {why}; running here instead", file=sys.stderr)
        return call_next(msg, context)
    context.state = state
    if reply.has_content() and TIMING_KEY in reply.content.metric_records:
        timing = reply.content.metric_records[TIMING_KEY]
        handler = float(timing.get("handler", 0.0))  # type: ignore[arg-type]
        timing["startup"] = startup + float(timing.get("startup", 0.0))  # type: ignore[arg-type]
        timing["forward"] = max(0.0, time.perf_counter() - t0 - handler)
    return reply


def forward(
    path: Path, msg: Message, context: Context, fingerprint: str = ""
) -> tuple[Message, Any]:
    """Send ``msg`` and ``context`` to the worker at ``path``; return its reply and the
    context state after the handler. ``fingerprint`` is this side's code (default: ours).

    Raises
    ------
    WorkerUnavailable
        Nothing listens at ``path``, the connection broke before a reply (the worker died), or
        the worker runs other code.
    WorkerRaised
        The handler raised in the worker.
    """
    from flwr.common.serde import (
        context_from_proto,
        context_to_proto,
        message_from_proto,
        message_to_proto,
    )

    header = {"fingerprint": fingerprint or code_fingerprint()}
    try:
        with Client(str(path), family="AF_UNIX") as conn:
            conn.send_bytes(json.dumps(header).encode())
            conn.send_bytes(message_to_proto(msg).SerializeToString())
            conn.send_bytes(context_to_proto(context).SerializeToString())
            status = json.loads(conn.recv_bytes())
            if status["status"] == "ok":
                reply = _parse_message(conn.recv_bytes(), message_from_proto)
                state = _parse_context(conn.recv_bytes(), context_from_proto).state
                return reply, state
    except (OSError, EOFError) as err:  # no socket, refused, or the worker died mid-message
        raise WorkerUnavailable(f"{type(err).__name__}: {err}") from None
    if status["status"] == "raised":
        raise WorkerRaised(str(status.get("reason", "the handler raised in the worker")))
    raise WorkerUnavailable(str(status.get("reason", status["status"])))


def _parse_message(data: bytes, from_proto: Any) -> Message:
    from flwr.proto.message_pb2 import Message as ProtoMessage

    proto = ProtoMessage()
    proto.ParseFromString(data)
    return from_proto(proto)  # type: ignore[no-any-return]


def _parse_context(data: bytes, from_proto: Any) -> Context:
    from flwr.proto.message_pb2 import Context as ProtoContext

    proto = ProtoContext()
    proto.ParseFromString(data)
    return from_proto(proto)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the worker side


def serve(path: Path, app: ClientApp | None = None, *, max_messages: int = 0) -> None:
    """Listen on the Unix socket ``path`` and run every message sent there with ``app`` (the
    bouquet ClientApp by default), one at a time; ``max_messages`` > 0 stops after that many
    (tests)."""
    if app is None:
        from .app import app as bouquet_app

        app = bouquet_app
    _clear_stale_socket(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o177)  # the socket is created 0600: this user's processes only
    try:
        listener = Listener(str(path), family="AF_UNIX")
    finally:
        os.umask(old_umask)
    handled = 0
    with listener:
        while not max_messages or handled < max_messages:
            # OSError/EOFError: the ClientApp went away mid-message; serve the next one.
            with listener.accept() as conn, contextlib.suppress(OSError, EOFError):
                _handle(conn, app)
            handled += 1


def _handle(conn: Connection, app: ClientApp) -> None:
    from flwr.common.serde import (
        context_from_proto,
        context_to_proto,
        message_from_proto,
        message_to_proto,
    )

    header = json.loads(conn.recv_bytes())
    msg = _parse_message(conn.recv_bytes(), message_from_proto)
    context = _parse_context(conn.recv_bytes(), context_from_proto)
    if header.get("fingerprint") != code_fingerprint():
        reason = "the worker runs other client code than this ClientApp (restart the worker)"
        conn.send_bytes(json.dumps({"status": "stale", "reason": reason}).encode())
        return
    # The worker runs the handlers itself: without its own address they never forward again.
    context.node_config = {k: v for k, v in context.node_config.items() if k != WORKER_KEY}
    kind = msg.metadata.message_type
    t0 = time.perf_counter()
    try:
        reply = app(msg, context)
    except Exception as err:  # reported to the ClientApp, which raises it
        reason = f"{type(err).__name__}: {err}"
        print(f"[worker] {kind}: raised {reason}", flush=True)
        conn.send_bytes(json.dumps({"status": "raised", "reason": reason}).encode())
        return
    print(f"[worker] {kind}: {time.perf_counter() - t0:.2f} s", flush=True)
    conn.send_bytes(json.dumps({"status": "ok"}).encode())
    conn.send_bytes(message_to_proto(reply).SerializeToString())
    conn.send_bytes(context_to_proto(context).SerializeToString())


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file a dead worker left behind; refuse to take over a live one."""
    if not path.exists():
        return
    try:
        with Client(str(path), family="AF_UNIX"):
            pass
    except OSError:
        path.unlink()
        return
    raise SystemExit(f"a worker already listens on {path}")


def preload() -> None:
    """Import what every training message needs, so the first message is as fast as the rest."""
    import torch  # noqa: F401

    from . import local, node  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="a bouquet node's warm ClientApp worker")
    p.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    args = p.parse_args(argv)
    # SIGTERM (deploy.py down) closes the listener, which removes the socket file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    preload()
    print(f"[worker] listening on {args.socket} (code {code_fingerprint()[:12]})", flush=True)
    serve(args.socket)


if __name__ == "__main__":
    main()
