"""bouquet ClientApp: one handler per message type (the table in :mod:`protocol`).

Heavy imports (torch, the zoo) happen inside the handlers so that a node answering a cheap
``query.info`` in a fresh deployment process does not pay for them; every reply carries the
message's ``timing`` (start-up, imports, data loading, handler: client_app/timing.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    INFO_KEY,
    METRICS_KEY,
    QUERY_EVALUATE,
    QUERY_FEATURE_STATS,
    QUERY_HEAD_LOSS,
    QUERY_PROTOTYPES,
    QUERY_SEED,
    SEED_SET_KEY,
    TRAIN_DENSE_GENERATOR,
    TRAIN_FD,
    TRAIN_FEDGEN,
    TRAIN_FMD,
    TRAIN_GENERATOR,
    TRAIN_H2L,
    TRAIN_MASK,
    TRAIN_PROBE,
    TRAIN_PROTO,
    NodeError,
    action,
    array_record,
)

from .node_state import node_state
from .threads import thread_policy
from .timing import stage, timed
from .worker import warm_worker

# warm_worker first: a message handed to the node's worker is not run here, so this process
# need not import torch for the thread policy (the worker applies it), and node_state runs
# exactly once, where the handler runs (in the worker, or here when none answers).
app = ClientApp(mods=[warm_worker, node_state, thread_policy])
Handler = Callable[[Message, Context], Message]


def typed_errors(handler: Handler) -> Handler:
    """A :class:`protocol.NodeError` becomes an error reply with its code, which the server
    acts on (any other exception becomes Flower's generic error reply)."""

    @wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except NodeError as err:
            return Message(Error(code=int(err.code), reason=err.reason), reply_to=msg)

    return wrapper


@app.query("info")
@timed
def query_info(msg: Message, context: Context) -> Message:
    """Report partition, architecture, label counts and number of examples."""
    with stage("imports"):
        from .node import load_node

    node = load_node(dict(msg.content[CONFIG_KEY]), dict(context.node_config))
    info = ConfigRecord(
        {
            "partition-id": node.partition_id,
            "architecture": node.architecture,
            "num-examples": len(node.data),
            "label-counts": node.label_counts(),
        }
    )
    return Message(RecordDict({INFO_KEY: info}), reply_to=msg)


@app.train()
@timed
def train(msg: Message, context: Context) -> Message:
    """Local training of the node's own architecture, starting from the received weights."""
    with stage("imports"):
        from .local import train_locally

    arrays, metrics = train_locally(
        array_record(msg.content, ARRAYS_KEY),
        dict(msg.content[CONFIG_KEY]),
        dict(context.node_config),
    )
    if fault := str(context.node_config.get("inject-fault", "")):  # a test's bad actor
        from .faults import inject_fault

        arrays = inject_fault(arrays, fault)
    return Message(
        RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: MetricRecord(dict(metrics))}),
        reply_to=msg,
    )


@app.query(action(QUERY_SEED))
@timed
def query_seed(msg: Message, context: Context) -> Message:
    """FedH2L: donate labelled examples of every class held, for the shared seed set."""
    with stage("imports"):
        from .h2l import donate_seed_set

    record = donate_seed_set(dict(msg.content[CONFIG_KEY]), dict(context.node_config))
    return Message(RecordDict({SEED_SET_KEY: record}), reply_to=msg)


@app.train(action(TRAIN_H2L))
@timed
@typed_errors
def train_h2l(msg: Message, context: Context) -> Message:
    """FedH2L: train the node's private model by mutual distillation; reply posteriors."""
    with stage("imports"):
        from .h2l import train_h2l as run_round

    reply = run_round(msg.content, dict(context.node_config), context.state)
    return Message(reply, reply_to=msg)


@app.train(action(TRAIN_FD))
@timed
def train_fd(msg: Message, context: Context) -> Message:
    """FD: train the node's private model toward the peers' per-class mean logits; reply its
    own per-class mean logits."""
    with stage("imports"):
        from .fd import train_fd as run_round

    reply = run_round(msg.content, dict(context.node_config), context.state)
    return Message(reply, reply_to=msg)


@app.train(action(TRAIN_PROTO))
@timed
def train_proto(msg: Message, context: Context) -> Message:
    """FedProto: train the node's private model toward the global class prototypes; reply its
    own prototypes."""
    with stage("imports"):
        from .fedproto import train_fedproto as run_round

    reply = run_round(msg.content, dict(context.node_config), context.state)
    return Message(reply, reply_to=msg)


@app.train(action(TRAIN_FEDGEN))
@timed
def train_fedgen(msg: Message, context: Context) -> Message:
    """FedGen: local training, the head also fitting the server generator's features."""
    with stage("imports"):
        from .fedgen import train_fedgen as run_round

    return Message(run_round(msg.content, dict(context.node_config)), reply_to=msg)


@app.train(action(TRAIN_PROBE))
@timed
def train_probe(msg: Message, context: Context) -> Message:
    """FMD: a few steps of the teacher's linear head on the node's cached teacher features."""
    with stage("imports"):
        from .fmd import probe_round

    return Message(probe_round(msg.content, dict(context.node_config)), reply_to=msg)


@app.query(action(QUERY_FEATURE_STATS))
@timed
def query_feature_stats(msg: Message, context: Context) -> Message:
    """FMD probe=lda: class statistics of the node's cached teacher features."""
    with stage("imports"):
        from .fmd import feature_statistics

    return Message(feature_statistics(msg.content, dict(context.node_config)), reply_to=msg)


@app.query(action(QUERY_HEAD_LOSS))
@timed
def query_head_loss(msg: Message, context: Context) -> Message:
    """FMD probe=lda: the head's summed loss on the node's examples at each calibration scale."""
    with stage("imports"):
        from .fmd import head_loss

    return Message(head_loss(msg.content, dict(context.node_config)), reply_to=msg)


@app.train(action(TRAIN_FMD))
@timed
def train_fmd(msg: Message, context: Context) -> Message:
    """FMD: train the student with distillation from the teacher (cached features + head)."""
    with stage("imports"):
        from .fmd import train_student

    return Message(train_student(msg.content, dict(context.node_config)), reply_to=msg)


@app.train(action(TRAIN_GENERATOR))
@timed
def train_generator(msg: Message, context: Context) -> Message:
    """Mosaic: train this node's generator once (cached on the node); reply it with
    synthetic prototypes."""
    with stage("imports"):
        from .mosaic import train_generator as run

    return Message(run(msg.content, dict(context.node_config)), reply_to=msg)


@app.query(action(QUERY_PROTOTYPES))
@timed
def query_prototypes(msg: Message, context: Context) -> Message:
    """Mosaic: per-class k-means centroids of the global model's features of local data."""
    with stage("imports"):
        from .mosaic import feature_prototypes

    return Message(feature_prototypes(msg.content, dict(context.node_config)), reply_to=msg)


@app.query(action(QUERY_EVALUATE))
@timed
def query_evaluate(msg: Message, context: Context) -> Message:
    """Mosaic's client gate: the candidate models' correct predictions on local examples."""
    with stage("imports"):
        from .mosaic import score_candidates

    return Message(score_candidates(msg.content, dict(context.node_config)), reply_to=msg)


@app.train(action(TRAIN_MASK))
@timed
def train_mask(msg: Message, context: Context) -> Message:
    """PRISM: train the generator's scores locally; reply one sampled mask, bit-packed."""
    with stage("imports"):
        from .prism import train_mask as run

    return Message(run(msg.content, dict(context.node_config), context.state), reply_to=msg)


@app.train(action(TRAIN_DENSE_GENERATOR))
@timed
def train_dense_generator(msg: Message, context: Context) -> Message:
    """PRISM's baseline (train.dense_generator): the dense generator's weights, same loss."""
    with stage("imports"):
        from .prism import train_dense

    return Message(train_dense(msg.content, dict(context.node_config), context.state), reply_to=msg)
