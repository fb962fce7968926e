"""Message types and record keys (the table in :mod:`protocol`)."""

from __future__ import annotations

# Message types. Flower routes ``<category>.<action>`` to the ClientApp handler registered with
# ``@app.<category>("<action>")``; a bare category goes to the default handler.
QUERY_INFO = "query.info"
TRAIN = "train"
QUERY_SEED = "query.seed"  # FedH2L
TRAIN_H2L = "train.h2l"  # FedH2L
TRAIN_PROBE = "train.probe"  # FMD
TRAIN_FMD = "train.fmd"  # FMD
QUERY_FEATURE_STATS = "query.feature_stats"  # FMD probe=lda: the node's class statistics
QUERY_HEAD_LOSS = "query.head_loss"  # FMD probe=lda: the head's loss at each calibration scale
TRAIN_GENERATOR = "train.generator"  # Mosaic
QUERY_PROTOTYPES = "query.prototypes"  # Mosaic
QUERY_EVALUATE = "query.evaluate"  # Mosaic's client gate: candidate models scored on local data
TRAIN_MASK = "train.mask"  # PRISM
TRAIN_DENSE_GENERATOR = "train.dense_generator"  # PRISM's baseline (Flower names = identifiers)
TRAIN_FD = "train.fd"  # FD (federated distillation)
TRAIN_PROTO = "train.proto"  # FedProto
TRAIN_FEDGEN = "train.fedgen"  # FedGen

# Record keys.
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
INFO_KEY = "info"
TIMING_KEY = "timing"
# In every message's config: the experiment's id, the same across a resume (a node's state is
# filed under it: client_app/node_state.py); 16 lowercase hex digits.
EXPERIMENT_KEY = "experiment-id"
SEED_SET_KEY = "seed-set"  # FedH2L: x (uint8 NCHW), y (int64)
PEERS_KEY = "peers"  # FedH2L: "mean" or one "peer-<partition>" matrix per peer
POSTERIORS_KEY = "posteriors"  # FedH2L: "p", (seed-set size, classes)
TEACHER_HEAD_KEY = "teacher-head"  # FMD: the teacher's linear head
GENERATOR_KEY = "generator"  # Mosaic: the client generator's arrays; FedGen: the server's
PROTOTYPES_KEY = "prototypes"  # Mosaic: "x" and "y" of synthetic or feature prototypes
# query.evaluate: one ArrayRecord per model to score, keyed "candidate/<name>/<architecture>";
# the reply's metrics hold "correct/<name>/<architecture>", "evaluated" and "num-examples".
CANDIDATE_PREFIX = "candidate/"
# query.evaluate's config may list interpolation weights (floats in (0, 1)): the node then also
# scores (1 - w) pre + w post of every architecture sent as "pre" and "post", named blend_name(w).
CANDIDATE_BLENDS = "candidate-blends"


def blend_name(weight: float) -> str:
    """A blend candidate's name, ``blend-<weight>`` (``repr``: exact, so both sides agree)."""
    return f"blend-{weight!r}"


MASK_KEY = "mask"  # PRISM: one array, packed uint8 "mask" or rANS-coded uint16 "coded"
CODED_MASK = "coded"  # PRISM: the array name of an entropy-coded mask (models.mask_coding)
SCORES_KEY = "scores"  # PRISM downlink: float32 scores
THETA_KEY = "theta"  # PRISM downlink: float16 probabilities
# FD: "logits" (classes, classes) float32, one mean logit row per class, and "counts" (classes,)
# int64, the examples behind each row; the same two arrays go down as the peers' class means.
CLASS_LOGITS_KEY = "class-logits"


def action(message_type: str) -> str:
    """The handler name of ``<category>.<action>`` (what ``@app.train(...)`` takes)."""
    _, _, name = message_type.partition(".")
    if not name:
        raise ValueError(f"{message_type!r} has no action: it goes to the default handler")
    return name


# FedProto: "prototypes" (classes, proto-width) float32, the mean features of each class, and
# "counts" as for FD; the global prototypes go down in the same form.
CLASS_PROTOTYPES_KEY = "class-prototypes"
