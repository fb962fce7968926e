"""Lossless entropy coding of PRISM's sampled masks under probabilities both sides share.

A client's mask is drawn from its locally trained probabilities, which stay close to the
global ones the server sent; coding each bit under the global probability costs about the
cross-entropy of the two (FedPM codes its masks the same way), below one bit per weight as
soon as the probabilities move away from 1/2.

The coder is a binary rANS with 16-bit probabilities, a 32-bit state and 16-bit output words,
run on many interleaved lanes at once so that numpy does the work: bit ``i`` belongs to lane
``i % lanes``. The stream is one uint16 array: each lane's final state (low word, high word),
then the renormalisation words in the order the encoder wrote them. The decoder checks that it
consumes every word and that every lane returns to the initial state, so a stream coded
under other probabilities (or tampered with) is refused rather than decoded into wrong bits.

Both sides must derive *identical* integer frequencies from what travelled, so they come from
exact arithmetic only: float16 probabilities times 2^16 are exact, and float32 scores are
rounded to multiples of 1/16 (exact) and looked up in a fixed table.
"""

from __future__ import annotations

import math

import numpy as np

PROB_BITS = 16
PROB_SCALE = 1 << PROB_BITS  # frequencies of a 1 lie in [1, PROB_SCALE - 1]
STATE_LOW = 1 << 16  # the state lives in [STATE_LOW, STATE_LOW << 16)
WORD_BITS = 16
STEPS_PER_LANE = 4096  # lanes = ceil(n / this), within LANE_LIMITS
LANE_LIMITS = (16, 1024)
SCORE_STEPS = 16  # scores are rounded to multiples of 1 / SCORE_STEPS
SCORE_RANGE = 16.0  # and clipped to [-SCORE_RANGE, SCORE_RANGE]


def _score_table() -> np.ndarray:
    # Python's float arithmetic on a fixed grid; tests/models/test_mask_coding.py checks that
    # no entry lies near a rounding boundary, so a last-ulp difference in exp cannot move one.
    k = range(-int(SCORE_RANGE * SCORE_STEPS), int(SCORE_RANGE * SCORE_STEPS) + 1)
    theta = [1.0 / (1.0 + math.exp(-i / SCORE_STEPS)) for i in k]
    return np.clip(np.rint(np.array(theta) * PROB_SCALE), 1, PROB_SCALE - 1).astype(np.uint32)


SCORE_TABLE = _score_table()


def frequencies_from_scores(scores: np.ndarray) -> np.ndarray:
    """Integer frequencies of a 1 (out of 2^16) from float32 scores, identical on every machine."""
    half = SCORE_RANGE * SCORE_STEPS
    k = np.rint(np.asarray(scores, dtype=np.float32) * np.float32(SCORE_STEPS))  # exact
    k = np.nan_to_num(np.clip(k, -half, half), nan=0.0)
    return SCORE_TABLE[(k + half).astype(np.int64)]


def frequencies_from_theta(theta: np.ndarray) -> np.ndarray:
    """Integer frequencies of a 1 from float16 probabilities (exact: a float16 times 2^16)."""
    t = np.nan_to_num(np.asarray(theta, dtype=np.float16).astype(np.float64), nan=0.5)
    return np.clip(np.rint(t * PROB_SCALE), 1, PROB_SCALE - 1).astype(np.uint32)


def num_lanes(n: int) -> int:
    low, high = LANE_LIMITS
    return int(min(high, max(low, -(-n // STEPS_PER_LANE))))


def _symbol_range(sym: np.ndarray, f1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequency, start) of each symbol: a 1 owns [0, f1), a 0 owns [f1, 2^16)."""
    return np.where(sym, f1, PROB_SCALE - f1), np.where(sym, 0, f1)


def _grid(values: np.ndarray, lanes: int, fill: int) -> np.ndarray:
    """(steps, lanes) view of ``values``, padded with ``fill``: bit i at [i // lanes, i % lanes]."""
    steps = -(-len(values) // lanes)
    out = np.full(steps * lanes, fill, dtype=np.uint64)
    out[: len(values)] = values
    return out.reshape(steps, lanes)


def encode(bits: np.ndarray, freq1: np.ndarray) -> np.ndarray:
    """The uint16 stream of 0/1 ``bits``, each a 1 with probability ``freq1 / 2^16``."""
    bits = np.asarray(bits)
    if bits.shape != freq1.shape or bits.ndim != 1:
        raise ValueError(f"bits {bits.shape} and frequencies {freq1.shape} must be equal 1-D")
    lanes = num_lanes(len(bits))
    # Padding bits are 0s under the smallest frequency of a 1: they cost ~2e-5 bits each.
    sym = _grid(bits.astype(np.uint64), lanes, 0).astype(bool)
    f1 = _grid(freq1.astype(np.uint64), lanes, 1)
    x = np.full(lanes, STATE_LOW, dtype=np.uint64)
    emitted: list[np.ndarray] = []
    for t in range(len(sym) - 1, -1, -1):  # rANS encodes backwards; the decoder reads forwards
        freq, start = _symbol_range(sym[t], f1[t])
        out = x >= (freq << np.uint64(WORD_BITS))
        emitted.append((x[out] & np.uint64(0xFFFF)).astype(np.uint16))
        x = np.where(out, x >> np.uint64(WORD_BITS), x)
        x = (x // freq << np.uint64(PROB_BITS)) + x % freq + start
    states = np.stack([x & np.uint64(0xFFFF), x >> np.uint64(16)], axis=1).astype(np.uint16)
    return np.concatenate([states.ravel(), *emitted]).astype(np.uint16)


def decode(stream: np.ndarray, freq1: np.ndarray) -> np.ndarray:
    """The bits of :func:`encode`'s ``stream`` under the same frequencies; ValueError when the
    stream is malformed, truncated, padded or coded under other probabilities."""
    stream = np.asarray(stream)
    if stream.dtype != np.uint16 or stream.ndim != 1:
        raise ValueError(f"a coded mask is a 1-D uint16 array, got {stream.dtype}{stream.shape}")
    n = len(freq1)
    lanes = num_lanes(n)
    if len(stream) < 2 * lanes:
        raise ValueError(f"coded mask has {len(stream)} words, fewer than its {2 * lanes} states")
    pairs = stream[: 2 * lanes].astype(np.uint64).reshape(lanes, 2)
    x = pairs[:, 0] | (pairs[:, 1] << np.uint64(16))
    if (x < STATE_LOW).any():
        raise ValueError("coded mask has a lane state below the coder's range")
    words = stream[2 * lanes :].astype(np.uint64)
    f1 = _grid(freq1.astype(np.uint64), lanes, 1)
    sym = np.empty(f1.shape, dtype=bool)
    end = len(words)
    mask16 = np.uint64(0xFFFF)
    for t in range(len(f1)):
        slot = x & mask16
        sym[t] = slot < f1[t]
        freq, start = _symbol_range(sym[t], f1[t])
        x = freq * (x >> np.uint64(PROB_BITS)) + slot - start
        need = x < STATE_LOW
        k = int(need.sum())
        if k > end:
            raise ValueError("coded mask is truncated")
        x[need] = (x[need] << np.uint64(WORD_BITS)) | words[end - k : end]
        end -= k
    if end != 0 or (x != STATE_LOW).any():
        raise ValueError(
            "coded mask does not decode cleanly (extra words or wrong final states): coded "
            "under other probabilities or corrupted"
        )
    bits = sym.ravel()
    if bits[n:].any():
        raise ValueError("coded mask has non-zero padding bits")
    return bits[:n].astype(np.uint8)


def cross_entropy_bits(bits: np.ndarray, freq1: np.ndarray) -> float:
    """The ideal code length of ``bits`` under ``freq1`` in bits (what :func:`encode` nears)."""
    p1 = np.asarray(freq1, dtype=np.float64) / PROB_SCALE
    p = np.where(np.asarray(bits, dtype=bool), p1, 1.0 - p1)
    return float(-np.log2(p).sum())
