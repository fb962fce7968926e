"""Federated datasets: sources, label-skew partitions, server splits and on-disk partitions."""

from .federation import ArrayDataset, DataSpec, Federation
from .sources import SOURCES, DatasetUnavailableError

__all__ = [
    "SOURCES",
    "ArrayDataset",
    "DataSpec",
    "DatasetUnavailableError",
    "Federation",
]
