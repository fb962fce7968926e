"""The message protocol shared by the ServerApp and the ClientApp: types, record keys, sizes.

=================  ===============================  ==========================================
message type       content sent to the node         reply content
=================  ===============================  ==========================================
``query.info``     ``config``                       ``info`` (partition, architecture, counts)
``train``          ``arrays``, ``config``           ``arrays``, ``metrics`` (``num-examples``)
``evaluate``       ``arrays``, ``config``           ``metrics`` (loss, accuracy, num-examples)
=================  ===============================  ==========================================

Every reply also carries ``timing`` (seconds of start-up, imports, data loading and handling on
the node: client_app/timing.py), which the server logs and never aggregates.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

QUERY_INFO = "query.info"
TRAIN = "train"
EVALUATE = "evaluate"

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
INFO_KEY = "info"
TIMING_KEY = "timing"


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
