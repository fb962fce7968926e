"""The message protocol between bouquet's ServerApp and ClientApp: message types, record keys,
payload encoding and typed error codes. Both apps import it; neither imports the other.

=======================  ==================================  ====================================
message type             content sent to the node            reply content
=======================  ==================================  ====================================
``query.info``           ``config``                          ``info`` (partition, architecture,
                                                             examples, label counts)
``train``                ``arrays``, ``config``              ``arrays``, ``metrics``
                                                             (``num-examples``, train loss)
``query.seed``           ``config``                          ``seed-set`` (FedH2L donations)
``train.h2l``            ``config`` [+ ``seed-set``]         ``posteriors``, ``metrics``
                         [+ ``peers``]
``train.probe``          ``arrays`` (teacher head),          ``arrays``, ``metrics`` (FMD)
                         ``config``
``train.fmd``            ``arrays``, ``teacher-head``,       ``arrays``, ``metrics`` (FMD)
                         ``config``
``query.feature_stats``  ``config``                          ``arrays`` (``class-sums``,
                                                             ``class-counts``, ``second-moment``),
                                                             ``metrics`` (FMD ``probe=lda``)
``query.head_loss``      ``arrays`` (teacher head),          ``arrays`` (``nll-sums``, one per
                         ``config`` (``probe-scales``)       scale), ``metrics`` (FMD
                                                             ``probe=lda``)
``train.generator``      ``config``                          ``generator``, ``prototypes``,
                                                             ``metrics`` (Mosaic)
``query.prototypes``     ``arrays``, ``config``              ``prototypes``, ``metrics`` (Mosaic)
``query.evaluate``       ``config`` [+ ``candidate-blends``  ``metrics``: ``correct/<name>/
                         weights], ``candidate/<name>/       <architecture>`` (blends too),
                         <architecture>`` (models to score)  ``evaluated``, ``num-examples``
                                                             (Mosaic's gate)
``train.mask``           ``scores`` or ``theta``,            ``mask`` (bit-packed or entropy-
                         ``config``                          coded), ``metrics`` (PRISM)
``train.dense_generator``  ``arrays``, ``config``            ``arrays``, ``metrics`` (PRISM's
                                                             dense baseline)
``train.fd``             ``config`` [+ ``class-logits``:     ``class-logits`` (the node's),
                         the peers' per-class means]         ``metrics`` (FD)
``train.proto``          ``config`` [+ ``class-prototypes``: ``class-prototypes`` (the node's),
                         the global prototypes]              ``metrics`` (FedProto)
``train.fedgen``         ``arrays``, ``config`` [+           ``arrays``, ``metrics`` (FedGen)
                         ``generator``: the server's]
=======================  ==================================  ====================================

Every message's ``config`` carries ``experiment-id`` (the same across a resume). Every reply
also carries ``timing`` (seconds of start-up, imports, data loading and handling on
the node), which the server logs and never aggregates. A node that cannot serve a message
replies with an error whose code is one of :class:`ErrorCode`.
"""

from .errors import ErrorCode, NodeError
from .messages import (
    ARRAYS_KEY,
    CANDIDATE_BLENDS,
    CANDIDATE_PREFIX,
    CLASS_LOGITS_KEY,
    CLASS_PROTOTYPES_KEY,
    CODED_MASK,
    CONFIG_KEY,
    EXPERIMENT_KEY,
    GENERATOR_KEY,
    INFO_KEY,
    MASK_KEY,
    METRICS_KEY,
    PEERS_KEY,
    POSTERIORS_KEY,
    PROTOTYPES_KEY,
    QUERY_EVALUATE,
    QUERY_FEATURE_STATS,
    QUERY_HEAD_LOSS,
    QUERY_INFO,
    QUERY_PROTOTYPES,
    QUERY_SEED,
    SCORES_KEY,
    SEED_SET_KEY,
    TEACHER_HEAD_KEY,
    THETA_KEY,
    TIMING_KEY,
    TRAIN,
    TRAIN_DENSE_GENERATOR,
    TRAIN_FD,
    TRAIN_FEDGEN,
    TRAIN_FMD,
    TRAIN_GENERATOR,
    TRAIN_H2L,
    TRAIN_MASK,
    TRAIN_PROBE,
    TRAIN_PROTO,
    action,
    blend_name,
)
from .records import (
    array_record,
    arrays_to_record,
    logit,
    record_to_arrays,
    serialized_size,
)

__all__ = [
    "ARRAYS_KEY",
    "CANDIDATE_BLENDS",
    "CANDIDATE_PREFIX",
    "CLASS_LOGITS_KEY",
    "CLASS_PROTOTYPES_KEY",
    "CODED_MASK",
    "CONFIG_KEY",
    "EXPERIMENT_KEY",
    "GENERATOR_KEY",
    "INFO_KEY",
    "MASK_KEY",
    "METRICS_KEY",
    "PEERS_KEY",
    "POSTERIORS_KEY",
    "PROTOTYPES_KEY",
    "QUERY_EVALUATE",
    "QUERY_FEATURE_STATS",
    "QUERY_HEAD_LOSS",
    "QUERY_INFO",
    "QUERY_PROTOTYPES",
    "QUERY_SEED",
    "SCORES_KEY",
    "SEED_SET_KEY",
    "TEACHER_HEAD_KEY",
    "THETA_KEY",
    "TIMING_KEY",
    "TRAIN",
    "TRAIN_DENSE_GENERATOR",
    "TRAIN_FD",
    "TRAIN_FEDGEN",
    "TRAIN_FMD",
    "TRAIN_GENERATOR",
    "TRAIN_H2L",
    "TRAIN_MASK",
    "TRAIN_PROBE",
    "TRAIN_PROTO",
    "ErrorCode",
    "NodeError",
    "action",
    "array_record",
    "arrays_to_record",
    "blend_name",
    "logit",
    "record_to_arrays",
    "serialized_size",
]
