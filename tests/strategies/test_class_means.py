"""FD's and FedProto's server side: the class means it pools and the checks on what nodes send."""

import numpy as np
import pytest

from protocol import arrays_to_record
from strategies.class_means import MAX_ABS_MEAN, check_class_means, pooled_class_means
from strategies.validation import InvalidReply


def _store(entries):
    data = {}
    for pid, (logits, counts) in entries.items():
        data[f"fd/means/{pid}"] = np.asarray(logits, np.float32)
        data[f"fd/counts/{pid}"] = np.asarray(counts, np.int64)
    return data


def test_pooled_means_leave_the_receiver_out_and_weight_by_examples():
    data = _store(
        {
            0: ([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [4, 0, 0]),
            1: ([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]], [2, 6, 0]),
            2: ([[0.0, 0.0, 0.0], [0.0, 5.0, 1.0], [0.0, 0.0, 0.0]], [0, 3, 0]),
        }
    )
    means, counts = pooled_class_means(data, "fd", exclude=0)
    # class 0 from partition 1 only; class 1: (6 * [0, 2, 0] + 3 * [0, 5, 1]) / 9
    assert counts.tolist() == [2, 9, 0]
    assert np.allclose(means[0], [3, 0, 0])
    assert np.allclose(means[1], [0, 27 / 9, 3 / 9])
    assert np.allclose(means[2], 0)  # no peer holds class 2
    means1, counts1 = pooled_class_means(data, "fd", exclude=1)
    assert counts1.tolist() == [4, 3, 0] and np.allclose(means1[0], [1, 0, 0])
    assert pooled_class_means(_store({0: ([[1.0]], [1])}), "fd", exclude=0) is None  # no peer yet
    everyone, total = pooled_class_means(data, "fd")  # FedProto: nobody left out
    assert total.tolist() == [6, 9, 0] and np.allclose(everyone[0], [(4 * 1 + 2 * 3) / 6, 0, 0])


def _record(logits, counts):
    return arrays_to_record(
        {"logits": np.asarray(logits, np.float32), "counts": np.asarray(counts, np.int64)}
    )


def test_a_valid_reply_passes():
    logits, counts = check_class_means(
        _record(np.eye(3) * 2, [5, 1, 2]), "logits", (3, 3), np.array([5, 1, 2])
    )
    assert logits.dtype == np.float32 and counts.tolist() == [5, 1, 2]


@pytest.mark.parametrize(
    ("logits", "counts", "match"),
    [
        (np.eye(2), [1, 1], "expected float32"),
        (np.eye(3) * np.nan, [1, 1, 1], "NaN"),
        (np.eye(3) * 2 * MAX_ABS_MEAN, [1, 1, 1], "beyond"),
        (np.eye(3), [1, -1, 1], "negative"),
        (np.eye(3), [9, 1, 1], "exceed the node's label counts"),
        (np.ones((3, 3)), [1, 0, 1], "no examples must be zero"),
    ],
)
def test_bad_class_logits_are_refused_naming_the_problem(logits, counts, match):
    with pytest.raises(InvalidReply, match=match):
        check_class_means(_record(logits, counts), "logits", (3, 3), np.array([5, 1, 2]))


def test_a_record_of_other_arrays_is_refused():
    with pytest.raises(InvalidReply, match="'logits' and 'counts'"):
        record = arrays_to_record({"p": np.eye(3, dtype=np.float32)})
        check_class_means(record, "logits", (3, 3), None)
