"""Payload encoding shared by both apps: array records, wire sizes, PRISM's score encoding."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common.serde import recorddict_to_proto


def serialized_size(content: RecordDict) -> int:
    """Bytes of a message's content as serialised for the wire."""
    return int(recorddict_to_proto(content).ByteSize())


def arrays_to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((k, Array(np.asarray(v, order="C"))) for k, v in arrays.items()))


def array_record(content: RecordDict, key: str) -> ArrayRecord:
    """``content[key]``, which must be an ArrayRecord (a client's check of a server message)."""
    record = content[key]
    if not isinstance(record, ArrayRecord):
        raise TypeError(f"'{key}' is {type(record).__name__}, not an ArrayRecord")
    return record


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: record[k].numpy() for k in record}


def logit(p: np.ndarray) -> np.ndarray:
    """Inverse sigmoid: PRISM's probabilities (theta) <-> scores, on both sides of the wire."""
    return np.log(p) - np.log1p(-p)
