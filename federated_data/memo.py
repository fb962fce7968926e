"""Files every message reads, read once per process.

A warm process (a simulation's Ray actor, the in-process grid, a future warm node worker)
handles many messages; without this, each one re-read the decoded dataset (55 MB for
Fashion-MNIST) and the partition cache. An entry is keyed by the file's identity (inode, size,
modification time), so a cache rewritten by :func:`federated_data.atomic.save_npz` (a rename)
is read again, and what is returned is read-only: a caller that wrote into it would otherwise
change every later message's data.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 4  # a run reads one dataset and one partition file; a few runs per process

_entries: OrderedDict[Path, tuple[tuple[int, int, int], Any]] = OrderedDict()


def read_once(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)``, or what it returned for the same unchanged file in this process."""
    path = path.resolve()
    st = path.stat()
    identity = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _entries.get(path)
    if hit is not None and hit[0] == identity:
        _entries.move_to_end(path)
        return hit[1]  # type: ignore[no-any-return]
    value = read(path)
    _entries[path] = (identity, value)
    while len(_entries) > MAX_ENTRIES:
        _entries.popitem(last=False)
    return value


def forget() -> None:
    """Drop every entry (tests; a process that wants its memory back)."""
    _entries.clear()
