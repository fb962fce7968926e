import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.mask_coding import (
    PROB_SCALE,
    SCORE_RANGE,
    SCORE_STEPS,
    SCORE_TABLE,
    cross_entropy_bits,
    decode,
    encode,
    frequencies_from_scores,
    frequencies_from_theta,
    num_lanes,
)


def _mask(n: int, seed: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Bits drawn from the probabilities they are coded under (scores ~ N(0, spread))."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, spread, n).astype(np.float32)
    freq = frequencies_from_scores(scores)
    bits = (rng.random(n) * PROB_SCALE < freq).astype(np.uint8)
    return bits, freq


@pytest.mark.parametrize("n", [1, 7, 16, 4096 * 16 + 3, 418_192])
def test_round_trip(n):
    bits, freq = _mask(n, n)
    assert np.array_equal(decode(encode(bits, freq), freq), bits)


@pytest.mark.parametrize("spread", [1.0, 4.0])
def test_length_is_the_cross_entropy_plus_the_lane_states(spread):
    n = 200_000
    bits, freq = _mask(n, 1, spread)
    coded_bits = 16 * len(encode(bits, freq))
    ideal = cross_entropy_bits(bits, freq)
    overhead = 32 * num_lanes(n)  # each lane's final 32-bit state
    assert ideal < coded_bits <= ideal * 1.002 + overhead + 16 * num_lanes(n)
    # Polarised probabilities code far below the packing's one bit per weight.
    assert coded_bits / n < (0.9 if spread == 1.0 else 0.5)


def test_certain_bits_cost_almost_nothing_and_surprises_still_decode():
    n = 50_000
    freq = np.full(n, PROB_SCALE - 1, dtype=np.uint32)  # every weight "surely" kept
    bits = np.ones(n, dtype=np.uint8)
    bits[::997] = 0  # a few 16-bit surprises
    coded = encode(bits, freq)
    assert np.array_equal(decode(coded, freq), bits)
    assert 16 * len(coded) < 0.03 * n  # 51 surprises x 16 bits + 16 lane states


def test_a_stream_under_other_probabilities_or_tampered_is_refused():
    bits, freq = _mask(30_000, 2)
    coded = encode(bits, freq)
    other = freq.copy()
    other[123] = PROB_SCALE - other[123]
    with pytest.raises(ValueError, match=r"other probabilities|truncated"):
        decode(coded, other)
    for bad in (coded[:-1], np.append(coded, np.uint16(7))):
        with pytest.raises(ValueError):
            decode(bad, freq)
    flipped = coded.copy()
    flipped[len(flipped) // 2] ^= 1
    with pytest.raises(ValueError):
        decode(flipped, freq)
    with pytest.raises(ValueError, match="1-D uint16"):
        decode(coded.astype(np.int32), freq)
    with pytest.raises(ValueError, match="states"):
        decode(coded[:3], freq)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**16 - 1), max_size=80), st.integers(1, 300))
def test_any_stream_decodes_to_valid_bits_or_a_clear_error(words, n):
    freq = frequencies_from_scores(np.linspace(-3, 3, n).astype(np.float32))
    try:
        bits = decode(np.array(words, dtype=np.uint16), freq)
    except ValueError:
        return
    assert bits.shape == (n,) and set(np.unique(bits)) <= {0, 1}


def test_frequencies_are_exact_functions_of_what_travelled():
    # No table entry lies within 1e-6 of a rounding boundary: a last-ulp difference in another
    # machine's exp cannot change an integer frequency, so both sides always agree.
    k = np.arange(-SCORE_RANGE * SCORE_STEPS, SCORE_RANGE * SCORE_STEPS + 1)
    raw = np.array([PROB_SCALE / (1 + math.exp(-i / SCORE_STEPS)) for i in k])
    fraction = raw - np.floor(raw)
    assert np.abs(fraction - 0.5).min() > 1e-6
    assert SCORE_TABLE[0] == 1 and SCORE_TABLE[-1] == PROB_SCALE - 1
    scores = np.array([-1e9, -16.0, -0.03, 0.0, 0.03, 2.0, 1e9, np.nan], dtype=np.float32)
    assert list(frequencies_from_scores(scores)) == [1, 1, 32768, 32768, 32768, 57724, 65535, 32768]
    theta = np.array([0.0, 0.5, 1.0, 0.25], dtype=np.float16)
    assert list(frequencies_from_theta(theta)) == [1, 32768, 65535, 16384]
