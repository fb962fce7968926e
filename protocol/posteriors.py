"""FedH2L's posterior codec: probability matrices (rows = seed examples, columns = classes) in
fewer bytes, both ways.

``posterior-dtype`` names the encoding of every matrix a node sends and the server relays:

============  ==========================================================  =================
encoding      arrays under the matrix's name ``<n>``                      bytes per row
============  ==========================================================  =================
``float32``   ``<n>`` float32                                             4 C
``float16``   ``<n>`` float16                                             2 C
``uint8``     ``<n>.q`` uint8 (row / row max x 255), ``<n>.scale`` (row   C + 2
              max, float16)
``uint4``     ``<n>.q`` two 4-bit codes per byte (row / row max x 15),    C / 2 + 2
              ``<n>.scale``
``top<k>``    ``<n>.idx`` uint8 class indices and ``<n>.val`` float16     3 k
              probabilities of the k largest entries; the rest of the
              mass is spread evenly over the other classes on decoding
============  ==========================================================  =================

**Changed rows only** (``posterior-delta``): a matrix may carry only some of its rows, with
``<n>.rows`` (their indices, ascending, uint16 or uint32) beside the encoding's arrays;
:func:`apply_update` writes them over the matrix the receiver already holds from the same
sender. :func:`changed_rows` picks the rows that moved by more than a tolerance.

Decoding renormalises every quantised or top-k row to sum 1 (quantisation moves the sums by up
to half a step per entry); float rows are checked and passed on as sent. The record is
self-describing: :func:`decode` reads whatever encoding arrived and refuses, naming the problem,
anything that is not a valid encoding of a (rows, classes) probability matrix.
"""

from __future__ import annotations

import re

import numpy as np

FLOAT_ENCODINGS = ("float32", "float16")
QUANTISED = {"uint8": 255, "uint4": 15}
TOP_K = re.compile(r"top([1-9][0-9]*)$")
MAX_CLASSES = 256  # top-k indices are uint8


class PosteriorError(ValueError):
    """Arrays that are not a valid encoded probability matrix; the message names the problem."""


def check_encoding(name: str, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` unless ``name`` is an encoding (``top<k>`` with k < classes)."""
    top = TOP_K.match(name)
    if name in FLOAT_ENCODINGS or name in QUANTISED:
        return
    if top is None:
        raise ValueError(
            f"posterior encoding {name!r} is unknown; allowed: float32, float16, uint8, uint4, "
            "top<k> (e.g. top3)"
        )
    if num_classes is not None and not 0 < int(top.group(1)) < num_classes:
        raise ValueError(f"{name}: k must be below the {num_classes} classes")


def encode(name: str, p: np.ndarray, encoding: str) -> dict[str, np.ndarray]:
    """The arrays that carry probability matrix ``p`` (rows sum to 1) under ``name``."""
    check_encoding(encoding, p.shape[1])
    if encoding in FLOAT_ENCODINGS:
        return {name: p.astype(encoding)}
    if encoding in QUANTISED:
        levels = QUANTISED[encoding]
        scale = p.max(axis=1, keepdims=True).astype(np.float16)
        safe = np.where(scale > 0, scale.astype(np.float32), 1.0)
        q = np.rint(np.clip(p / safe, 0.0, 1.0) * levels).astype(np.uint8)
        if encoding == "uint4":
            q = _pack4(q)
        return {f"{name}.q": q, f"{name}.scale": scale[:, 0]}
    k = int(encoding[3:])
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    val = np.take_along_axis(p, idx, axis=1)
    return {f"{name}.idx": idx.astype(np.uint8), f"{name}.val": val.astype(np.float16)}


def decode(arrays: dict[str, np.ndarray], name: str, num_classes: int) -> np.ndarray:
    """The float32 (rows, ``num_classes``) probability matrix under ``name``.

    Raises
    ------
    PosteriorError
        If the arrays are not one encoding's, or their shapes, types or values are invalid.
    """
    keys = {k for k in arrays if k == name or k.startswith(f"{name}.")}
    if keys == {name}:
        p = arrays[name]
        if p.dtype not in (np.float16, np.float32) or p.ndim != 2 or p.shape[1] != num_classes:
            raise PosteriorError(
                f"{name} is {p.dtype}{list(p.shape)}, expected float16/float32 [rows, "
                f"{num_classes}]"
            )
        p32 = p.astype(np.float32)
        _normalised(p32, name, tol=1e-2 if p.dtype == np.float16 else 1e-4)  # checks only
        return p32  # as sent: float32 rows reach the loss bit for bit
    if keys == {f"{name}.q", f"{name}.scale"}:
        return _dequantise(arrays[f"{name}.q"], arrays[f"{name}.scale"], name, num_classes)
    if keys == {f"{name}.idx", f"{name}.val"}:
        return _untop(arrays[f"{name}.idx"], arrays[f"{name}.val"], name, num_classes)
    raise PosteriorError(f"arrays {sorted(keys)} are no posterior encoding of {name!r}")


def _dequantise(q: np.ndarray, scale: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    if q.dtype != np.uint8 or q.ndim != 2 or scale.dtype != np.float16 or scale.ndim != 1:
        raise PosteriorError(f"{name}: codes must be uint8 [rows, _], scales float16 [rows]")
    packed = q.shape[1] == (num_classes + 1) // 2 and q.shape[1] != num_classes
    if q.shape[1] not in (num_classes, (num_classes + 1) // 2) or len(scale) != len(q):
        raise PosteriorError(f"{name}: codes {list(q.shape)}, scales {list(scale.shape)}")
    levels = QUANTISED["uint4" if packed else "uint8"]
    codes = _unpack4(q, num_classes) if packed else q
    s = scale.astype(np.float32)
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1.001).any():
        raise PosteriorError(f"{name}: scales outside [0, 1]")
    p = codes.astype(np.float32) / levels * s[:, None]
    return _normalised(p, name, tol=None)


def _untop(idx: np.ndarray, val: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    if idx.dtype != np.uint8 or val.dtype != np.float16 or idx.ndim != 2 or idx.shape != val.shape:
        raise PosteriorError(f"{name}: top-k needs uint8 indices and float16 values of one shape")
    k = idx.shape[1]
    if not 0 < k < num_classes or (idx >= num_classes).any():
        raise PosteriorError(f"{name}: top-{k} indices outside [0, {num_classes})")
    if (np.sort(idx, axis=1)[:, 1:] == np.sort(idx, axis=1)[:, :-1]).any():
        raise PosteriorError(f"{name}: a class appears twice in a row's top-{k}")
    v = val.astype(np.float32)
    if not np.isfinite(v).all() or (v < 0).any() or (v.sum(1) > 1.01).any():
        raise PosteriorError(f"{name}: top-k values must be probabilities summing to at most 1")
    rest = np.clip(1.0 - v.sum(1, keepdims=True), 0.0, None) / (num_classes - k)
    p = np.repeat(rest, num_classes, axis=1)
    np.put_along_axis(p, idx.astype(np.int64), v, axis=1)
    return _normalised(p, name, tol=None)


def _normalised(p: np.ndarray, name: str, tol: float | None) -> np.ndarray:
    """Rows checked (finite, non-negative, summing to 1 within ``tol``; None: positive only)
    and rescaled to sum 1."""
    if not np.isfinite(p).all() or (p < 0).any():
        raise PosteriorError(f"{name} holds negative, NaN or Inf values")
    sums = p.sum(1, keepdims=True)
    if tol is not None and np.abs(sums - 1).max(initial=0.0) > tol:
        raise PosteriorError(f"{name}: rows do not sum to 1")
    if (sums <= 0).any():
        raise PosteriorError(f"{name}: a row has no probability mass")
    return (p / sums).astype(np.float32)


def _pack4(q: np.ndarray) -> np.ndarray:
    if q.shape[1] % 2:
        q = np.pad(q, ((0, 0), (0, 1)))
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)


def _unpack4(q: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.empty((len(q), 2 * q.shape[1]), dtype=np.uint8)
    out[:, 0::2], out[:, 1::2] = q & 0x0F, q >> 4
    return out[:, :num_classes]


def changed_rows(p: np.ndarray, reference: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the rows of ``p`` whose largest absolute change from ``reference`` (the
    matrix the receiver holds) exceeds ``tolerance``."""
    if p.shape != reference.shape:
        return np.arange(len(p))
    return np.flatnonzero(np.abs(p - reference).max(axis=1, initial=0.0) > tolerance)


def encode_update(
    name: str, p: np.ndarray, encoding: str, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """The arrays that carry rows ``rows`` of ``p`` only (see :func:`apply_update`)."""
    index_type = np.uint16 if len(p) <= 2**16 else np.uint32
    return {**encode(name, p[rows], encoding), f"{name}.rows": rows.astype(index_type)}


def apply_update(
    arrays: dict[str, np.ndarray], name: str, num_classes: int, held: np.ndarray
) -> np.ndarray:
    """``held`` with the rows the arrays carry replaced by their decoded values (a copy).

    Raises
    ------
    PosteriorError
        If the row indices are not ascending, unique, in range and one per encoded row, or the
        rows are no valid encoding.
    """
    rows = arrays.get(f"{name}.rows")
    if rows is None:
        raise PosteriorError(f"{name}: no row indices ({name}.rows) in a changed-rows update")
    if rows.dtype not in (np.uint16, np.uint32) or rows.ndim != 1:
        raise PosteriorError(f"{name}.rows is {rows.dtype}{list(rows.shape)}, expected uint16/32")
    if len(rows) and (rows[-1] >= len(held) or (np.diff(rows.astype(np.int64)) <= 0).any()):
        raise PosteriorError(f"{name}.rows must ascend, without repeats, below {len(held)}")
    values = {k: v for k, v in arrays.items() if k != f"{name}.rows"}
    sub = decode(values, name, num_classes)
    if sub.shape != (len(rows), held.shape[1]):
        raise PosteriorError(f"{name}: {len(sub)} rows sent for {len(rows)} indices")
    out = held.astype(np.float32, copy=True)
    out[rows.astype(np.int64)] = sub
    return out
