"""Columnar DAQ rows: the one in-memory form every dtlive stage passes along.

A :class:`Rows` holds numpy columns for a batch of DAQ records plus, for
bookkeeping, the Kafka partition and offset each row came from.

>>> r = Rows.from_columns(head=[2, 4], fpga=[0, 1], channel=[5, 0], orbit=[10, 11], bx=[3, 0], tdc=[7, -0.5])
>>> hits, n_ancillary = clean(r)
>>> len(hits), n_ancillary, hits.tdc.dtype
(1, 1, dtype('int64'))
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from dtlive.core import detector as det

COLUMNS = ("head", "fpga", "channel", "orbit", "bx", "tdc")


@dataclass(frozen=True, eq=False)
class Rows:
    """A batch of DAQ records as numpy columns (one array per field, same length).

    Hit fields are int64 once cleaned; ancillary rows may carry floats.
    ``partition``/``offset`` locate the Kafka message of each row (file row index
    when the rows did not come from Kafka).

    >>> r = Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[5, 6], orbit=[1, 1], bx=[3, 3], tdc=[4, 4])
    >>> len(r), r.channel.tolist(), len(r.select(r.fpga == 1))
    (2, [5, 6], 1)
    """

    head: np.ndarray
    fpga: np.ndarray
    channel: np.ndarray
    orbit: np.ndarray
    bx: np.ndarray
    tdc: np.ndarray
    partition: np.ndarray
    offset: np.ndarray

    def __len__(self) -> int:
        return len(self.head)

    @classmethod
    def from_columns(cls, partition=None, offset=None, **columns) -> Rows:
        """Build from array-likes; missing partition/offset default to 0 and the row index."""
        n = len(columns["head"])
        cols = {k: np.asarray(columns[k]) for k in COLUMNS}
        cols = {k: v if v.dtype.kind == "f" else v.astype(np.int64, copy=False) for k, v in cols.items()}
        part = np.zeros(n, np.int32) if partition is None else np.broadcast_to(np.asarray(partition, np.int32), (n,))
        off = np.arange(n, dtype=np.int64) if offset is None else np.broadcast_to(np.asarray(offset, np.int64), (n,))
        return cls(**cols, partition=part, offset=off)

    @classmethod
    def empty(cls) -> Rows:
        return cls.from_columns(**{k: np.zeros(0, np.int64) for k in COLUMNS})

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        """Concatenate batches (an empty list gives empty Rows)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def select(self, mask_or_index: np.ndarray | slice) -> Rows:
        """Rows where a boolean mask is true (or at integer indices, or in a slice)."""
        return Rows(**{f.name: getattr(self, f.name)[mask_or_index] for f in fields(self)})

    def to_pandas(self):
        """The DAQ record columns as a pandas DataFrame with the CSV header names."""
        import pandas as pd

        return pd.DataFrame({name: getattr(self, col) for name, col in zip(det.FIELDS, COLUMNS)})


def clean(rows: Rows) -> tuple[Rows, int]:
    """Keep only hit rows (HEAD == 2) with int64 fields; return them and the ancillary count.

    >>> rows = Rows.from_columns(head=[2, 1], fpga=[0, 0], channel=[5, 139], orbit=[1, 1], bx=[0, 0], tdc=[0, 0])
    >>> hits, ancillary = clean(rows)
    >>> len(hits), ancillary
    (1, 1)
    """
    is_hit = rows.head == det.HIT_HEAD
    hits = rows.select(is_hit) if not is_hit.all() else rows
    if any(getattr(hits, c).dtype != np.int64 for c in COLUMNS):
        hits = Rows(
            **{c: getattr(hits, c).astype(np.int64) for c in COLUMNS}, partition=hits.partition, offset=hits.offset
        )
    return hits, int(len(rows) - len(hits))


def partitions_of(partition: np.ndarray) -> np.ndarray:
    """The distinct partition numbers present (small non-negative ints: min/max, else a bincount; no sort).

    >>> partitions_of(np.array([3, 0, 3])).tolist()
    [0, 3]
    """
    if not len(partition):
        return np.empty(0, np.int64)
    lo, hi = int(partition.min()), int(partition.max())
    if lo == hi:  # the usual case: one partition
        return np.array([lo], np.int64)
    return np.flatnonzero(np.bincount(np.asarray(partition, np.int64) - lo)) + lo


def by_partition(partition: np.ndarray, values: np.ndarray, reduce: np.ufunc) -> dict[int, int]:
    """``reduce`` (e.g. ``np.minimum``) of ``values`` per partition present.

    >>> by_partition(np.array([1, 0, 1]), np.array([5, 7, 2]), np.maximum)
    {0: 7, 1: 5}
    """
    parts = partitions_of(partition)
    if len(parts) == 1:
        return {int(parts[0]): int(reduce.reduce(values))}
    return {int(p): int(reduce.reduce(values[partition == p])) for p in parts}
