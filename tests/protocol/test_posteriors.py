"""FedH2L's posterior codec: round trips within each encoding's error, sizes, and refusals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.posteriors import (
    PosteriorError,
    apply_update,
    changed_rows,
    check_encoding,
    decode,
    encode,
    encode_update,
)


def _posteriors(rows=200, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, classes)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("encoding", "max_error", "bytes_per_row"),
    [
        ("float32", 0.0, 40),
        ("float16", 1e-3, 20),
        # A code is within half a step (scale / 2 levels, scale <= 1) of its entry; rescaling the
        # row to sum 1 moves an entry by at most the row's summed error: (1 + C) / (2 levels).
        ("uint8", 11 / 510, 12),  # 10 codes + a float16 scale
        ("uint4", 11 / 30, 7),  # 5 bytes of codes + the scale
    ],
)
def test_round_trip_error_and_size_of_each_dense_encoding(encoding, max_error, bytes_per_row):
    p = _posteriors()
    arrays = encode("p", p, encoding)
    assert sum(a.nbytes for a in arrays.values()) == bytes_per_row * len(p)
    back = decode(arrays, "p", 10)
    assert back.dtype == np.float32 and back.shape == p.shape
    # Float rows pass as sent (float16 rounding moves their sums); others are rescaled.
    assert np.allclose(back.sum(1), 1, atol=1e-3 if encoding == "float16" else 1e-5)
    if encoding == "float32":
        assert np.array_equal(back, p)
    assert np.abs(back - p).max() <= max_error + 1e-6
    assert (back.argmax(1) == p.argmax(1)).mean() > 0.99


def test_top_k_keeps_the_k_largest_and_spreads_the_rest_evenly():
    p = np.array([[0.6, 0.25, 0.1, 0.05]], np.float32)
    arrays = encode("p", p, "top2")
    assert arrays["p.idx"].tolist() == [[0, 1]]
    back = decode(arrays, "p", 4)
    assert np.allclose(back, [[0.6, 0.25, 0.075, 0.075]], atol=1e-3)
    big = _posteriors()
    assert sum(a.nbytes for a in encode("p", big, "top3").values()) == 9 * len(big)


def test_encodings_with_a_name_other_than_p_travel_side_by_side():
    a, b = _posteriors(seed=1), _posteriors(seed=2)
    arrays = {**encode("peer-1", a, "uint8"), **encode("peer-2", b, "uint8")}
    assert np.abs(decode(arrays, "peer-2", 10) - b).max() < 11 / 510


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"p": np.ones((2, 10), np.float64) / 10}, "expected float16/float32"),
        ({"p": np.full((2, 10), 0.2, np.float32)}, "do not sum to 1"),
        (
            {"p.q": np.zeros((2, 10), np.uint8), "p.scale": np.zeros(2, np.float16)},
            "no probability",
        ),
        ({"p.q": np.ones((2, 10), np.uint8), "p.scale": np.full(2, 3, np.float16)}, "outside"),
        ({"p.q": np.ones((2, 7), np.uint8), "p.scale": np.ones(2, np.float16)}, "codes"),
        (
            {"p.idx": np.array([[1, 1]], np.uint8), "p.val": np.array([[0.5, 0.2]], np.float16)},
            "appears twice",
        ),
        (
            {"p.idx": np.array([[1, 12]], np.uint8), "p.val": np.array([[0.5, 0.2]], np.float16)},
            "outside",
        ),
        (
            {"p.idx": np.array([[1, 2]], np.uint8), "p.val": np.array([[0.9, 0.5]], np.float16)},
            "at most 1",
        ),
        ({"p.q": np.ones((2, 10), np.uint8)}, "no posterior encoding"),
    ],
)
def test_invalid_arrays_are_refused_naming_the_problem(arrays, match):
    with pytest.raises(PosteriorError, match=match):
        decode(arrays, "p", 10)


def test_unknown_encodings_and_top_k_beyond_the_classes_are_refused():
    check_encoding("top3", 10)
    with pytest.raises(ValueError, match="unknown"):
        check_encoding("int8")
    with pytest.raises(ValueError, match="below the 10 classes"):
        check_encoding("top10", 10)


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from(["uint8", "uint4", "top2"]),
    st.lists(st.integers(0, 255), min_size=20, max_size=20),
    st.lists(st.floats(0, 1, width=16), min_size=2, max_size=2),
)
def test_any_arrays_of_the_right_types_decode_to_probabilities_or_a_clear_error(
    encoding, codes, scales
):
    """Whatever a node sends in an encoding's arrays, the server gets probability rows or a
    PosteriorError, never a crash or a matrix that is not one."""
    q = np.array(codes, np.uint8).reshape(2, 10)
    if encoding == "uint4":
        arrays = {"p.q": q[:, :5].copy(), "p.scale": np.array(scales, np.float16)}
    elif encoding == "uint8":
        arrays = {"p.q": q, "p.scale": np.array(scales, np.float16)}
    else:
        arrays = {"p.idx": q[:, :2] % 12, "p.val": np.array([scales, scales], np.float16)}
    try:
        p = decode(arrays, "p", 10)
    except PosteriorError:
        return
    assert p.shape == (2, 10) and np.isfinite(p).all() and (p >= 0).all()
    assert np.allclose(p.sum(1), 1, atol=1e-5)


# ------------------------------------------------------------------ changed rows only


def _probs(rows: int, classes: int = 10, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(rows, classes))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("encoding", ["float32", "float16", "uint8", "uint4", "top3"])
def test_an_update_of_the_changed_rows_rebuilds_what_a_full_matrix_would(encoding):
    held_by_sender = decode(encode("p", _probs(50), encoding), "p", 10)  # what both hold
    new = held_by_sender.copy()
    new[[3, 17, 40]] = _probs(3, seed=1)  # three rows moved
    new[5] += np.float32(1e-4) * (np.arange(10) - 4.5)  # one row barely moved
    rows = changed_rows(new, held_by_sender, tolerance=1e-3)
    assert rows.tolist() == [3, 17, 40]
    arrays = encode_update("p", new, encoding, rows)
    assert arrays["p.rows"].dtype == np.uint16
    got = apply_update(arrays, "p", 10, held_by_sender)
    want = held_by_sender.copy()
    want[rows] = decode(encode("p", new[rows], encoding), "p", 10)
    np.testing.assert_array_equal(got, want)  # bit for bit: both sides hold the same matrix
    full = encode("p", new, encoding)
    assert sum(a.nbytes for a in arrays.values()) < sum(a.nbytes for a in full.values()) / 5


def test_an_update_with_nothing_changed_is_empty_and_keeps_the_held_matrix():
    held = _probs(20)
    arrays = encode_update("p", held, "uint8", changed_rows(held, held, 0.0))
    np.testing.assert_array_equal(apply_update(arrays, "p", 10, held), held)


@pytest.mark.parametrize(
    "rows, match",
    [
        (np.array([3, 3], np.uint16), "ascend"),
        (np.array([5, 2], np.uint16), "ascend"),
        (np.array([1, 99], np.uint16), "below 20"),
        (np.array([1, 2], np.int64), "uint16"),
        (np.array([1, 2, 4], np.uint16), "2 rows sent for 3"),
    ],
)
def test_bad_row_indices_are_refused_by_name(rows, match):
    held = _probs(20)
    arrays = {**encode("p", _probs(2, seed=2), "float32"), "p.rows": rows}
    with pytest.raises(PosteriorError, match=match):
        apply_update(arrays, "p", 10, held)


def test_a_full_matrix_is_no_update_and_an_update_is_no_full_matrix():
    held = _probs(20)
    with pytest.raises(PosteriorError, match="no row indices"):
        apply_update(encode("p", held, "float32"), "p", 10, held)
    update = encode_update("p", held, "float32", np.array([1, 2]))
    with pytest.raises(PosteriorError, match="no posterior encoding"):
        decode(update, "p", 10)
