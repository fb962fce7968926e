"""Property tests: whatever a reply holds, handling it never raises, and a reply that is kept
is valid (shapes, dtypes, finite values, counts within what the node reported)."""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategies.base import Exchange, FederatedStrategy, NodeInfo, _parse_info
from strategies.fd import FD
from strategies.fedavg import FedAvg
from strategies.fedh2l import FedH2L
from strategies.mosaic import _parse_generator, _parse_prototypes, _parse_scores
from strategies.validation import check_train_reply

TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
NODE = 7
KNOWN = NodeInfo(NODE, 0, "mlp", 12, (6, 6, 0))
EXPECTED = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}
KEYS = [
    "arrays",
    "metrics",
    "info",
    "posteriors",
    "seed-set",
    "generator",
    "prototypes",
    "class-logits",
    "x",
]
NAMES = ["w", "b", "p", "x", "y", "z", "logits", "counts"]
NUMBERS = st.one_of(
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 12, 13, 10**12, -1, 1e308, 0.5]),
)
DTYPES = st.sampled_from([np.float32, np.float16, np.float64, np.int64, np.uint8, np.bool_])


@st.composite
def arrays(draw):
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=4))
    dtype = draw(DTYPES)
    data = draw(st.lists(NUMBERS, min_size=1, max_size=3))
    with np.errstate(all="ignore"):
        flat = np.resize(np.asarray(data, dtype=np.float64), int(np.prod(shape)))
        if not np.issubdtype(dtype, np.floating):  # NaN has no integer value
            flat = np.nan_to_num(flat)
        return flat.astype(dtype).reshape(shape)


def records():
    array_record = st.dictionaries(st.sampled_from(NAMES), arrays(), max_size=3).map(
        lambda d: ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in d.items()})
    )
    values = st.one_of(NUMBERS, st.lists(st.integers(0, 20), max_size=4))
    metric_keys = st.sampled_from(
        [
            "num-examples",
            "test-accuracy",
            "test-loss",
            "local-accuracy",
            "partition-id",
            "evaluated",
            "correct/pre/mlp",
        ]
    )
    metric_record = st.dictionaries(metric_keys, values, max_size=5).map(MetricRecord)
    info_keys = st.sampled_from(["partition-id", "architecture", "num-examples", "label-counts"])
    info_values = st.one_of(values, st.sampled_from(["mlp", "vgg", ""]))
    config_record = st.dictionaries(info_keys, info_values, max_size=4).map(ConfigRecord)
    return st.one_of(array_record, metric_record, config_record)


def replies():
    return st.dictionaries(st.sampled_from(KEYS), records(), max_size=4).map(_reply)


def _reply(content):
    msg = Message(RecordDict(), dst_node_id=NODE, message_type="train", group_id="1")
    return Message(RecordDict(content), reply_to=msg)


def _strategy(cls, **kwargs) -> FederatedStrategy:
    s = cls(model_fn=lambda arch: None, node_config={"input-shape": [1, 2, 2]}, **kwargs)
    s.nodes[NODE] = KNOWN
    return s


def _handle(strategy, parse, reply):
    """What exchange does with one reply; returns the parsed value or None when dropped."""
    ex = Exchange()
    strategy._accept(ex, NODE, reply, 0.0, "fuzz", 1, parse)  # must never raise
    assert (NODE in ex.replies) != (NODE in ex.dropped)
    return ex.replies.get(NODE)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(replies())
def test_train_replies(reply):
    s = _strategy(FedAvg)
    kept = _handle(s, lambda r: check_train_reply(r, EXPECTED, s.known_examples(r)), reply)
    if kept is not None:
        arrays_, n, metrics = kept
        assert 0 <= n <= KNOWN.num_examples
        for name, ref in EXPECTED.items():
            assert arrays_[name].shape == ref.shape and np.isfinite(arrays_[name]).all()
        assert all(np.isfinite(list(metrics.values())))


@FUZZ
@given(replies())
def test_query_info_replies(reply):
    kept = _handle(_strategy(FedAvg), lambda r: _parse_info(r, 3), reply)
    if kept is not None:
        _, _, n, counts = kept
        assert len(counts) == 3 and sum(counts) == n and min(counts) >= 0


@FUZZ
@given(replies())
def test_fedh2l_replies_and_donations(reply):
    s = _strategy(FedH2L, num_classes=3, seed_per_class=2)
    kept = _handle(s, lambda r: s._parse(r, 4), reply)
    if kept is not None:
        posteriors, metrics = kept
        assert posteriors.shape == (4, 3) and np.allclose(posteriors.sum(1), 1, atol=1e-2)
        assert 0 <= metrics["test-accuracy"] <= 1 and 0 <= metrics["local-accuracy"] <= 1
    donation = _handle(s, s._parse_donation, reply)
    if donation is not None:
        x, y = donation
        assert x.shape[1:] == (1, 2, 2) and len(x) == len(y)
        assert np.bincount(y, minlength=3).max(initial=0) <= 2


@FUZZ
@given(replies())
def test_mosaic_generator_and_prototype_replies(reply):
    s = _strategy(FedAvg)
    kept = _handle(s, lambda r: _parse_generator(r, EXPECTED, (3, 1, 2, 2), 2), reply)
    if kept is not None:
        assert kept[1].shape[1:] == (1, 2, 2) and kept[1].dtype == np.uint8
    protos = _handle(s, lambda r: _parse_prototypes(r, (4,), np.float32, 3, 2), reply)
    if protos is not None:
        x, y = protos
        assert x.shape[1:] == (4,) and np.isfinite(x).all() and len(x) == len(y)


@FUZZ
@given(replies())
def test_mosaic_candidate_scores(reply):
    s = _strategy(FedAvg)
    kept = _handle(s, lambda r: _parse_scores(r, ["pre/mlp"], s.known_examples(r)), reply)
    if kept is not None:
        n, accuracy = kept
        assert 0 <= n <= KNOWN.num_examples and 0 <= accuracy["pre/mlp"] <= 1


@FUZZ
@given(replies())
def test_fd_replies(reply):
    s = _strategy(FD, num_classes=3)
    kept = _handle(s, s._parse, reply)
    if kept is not None:
        (logits, counts), metrics = kept
        assert logits.shape == (3, 3) and np.isfinite(logits).all()
        assert (counts >= 0).all() and (counts <= np.array(KNOWN.label_counts)).all()
        assert 0 <= metrics["test-accuracy"] <= 1


def test_an_unexpected_exception_in_a_parser_drops_only_that_reply():
    def parse(reply):
        raise IndexError("parser bug")

    assert _handle(_strategy(FedAvg), parse, _reply({})) is None


def test_valid_replies_are_kept_by_the_same_path():
    """The properties above are not vacuous: well-formed replies pass every parser."""
    s = _strategy(FedH2L, num_classes=3, seed_per_class=2)
    train = _reply(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in EXPECTED.items()}),
            "metrics": MetricRecord({"num-examples": 12, "train-loss": 0.5}),
        }
    )
    assert _handle(s, lambda r: check_train_reply(r, EXPECTED, s.known_examples(r)), train)
    info = _reply(
        {
            "info": ConfigRecord(
                {
                    "partition-id": 0,
                    "architecture": "mlp",
                    "num-examples": 12,
                    "label-counts": [6, 6, 0],
                }
            )
        }
    )
    assert _handle(s, lambda r: _parse_info(r, 3), info) == (0, "mlp", 12, (6, 6, 0))
    p = np.full((4, 3), 1 / 3, np.float32)
    h2l = _reply(
        {
            "posteriors": ArrayRecord({"p": Array(p)}),
            "metrics": MetricRecord(
                {"num-examples": 10, "test-accuracy": 0.5, "test-loss": 1.0, "local-accuracy": 0.6}
            ),
        }
    )
    assert _handle(s, lambda r: s._parse(r, 4), h2l) is not None
    x, y = np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 1], np.int64)
    donation = _reply({"seed-set": ArrayRecord({"x": Array(x), "y": Array(y)})})
    assert _handle(s, s._parse_donation, donation) is not None
