"""The monitoring products of a window's hits: one registry of mergeable accumulators.

Pure functions: cleansed hits in, counts out. Each product is a :class:`~dtlive.core.products.kernel.Product`
in its own module (:mod:`~dtlive.core.products.counts`, :mod:`~dtlive.core.products.multiplicity`,
:mod:`~dtlive.core.products.drift`; the reconstruction products :mod:`~dtlive.core.products.events`,
:mod:`~dtlive.core.products.timebox`, :mod:`~dtlive.core.products.t0diff` on
:mod:`~dtlive.core.products.eventbase`), listed once in :data:`REGISTRY`. The single processor, the Dask
partition actors and their driver, and the file replay all run the registry's exchange
(:mod:`dtlive.core.products.kernel`):
``share`` -> ``plan_requests`` -> ``answer`` -> ``merge`` -> ``finish``; in one process that is
:func:`compute_arrays` / :func:`compute_products`, the exchange on a single share.

>>> from dtlive.core.rows import Rows
>>> hits = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[1, 2, 128], orbit=[5, 5, 5], bx=[0, 0, 0],
...                          tdc=[0, 0, 0])
>>> ds = compute_products(hits)
>>> int(ds.total_hits), ds.hits_per_chamber.values.tolist()
(3, [2, 0, 0, 0])
>>> int(ds.active_channels_per_orbit.sel(chamber=0, multiplicity=2))
1

The same split over two shares, merged:

>>> a, b = hits.select(np.array([True, False, True])), hits.select(np.array([False, True, False]))
>>> merged = combine([a, b])
>>> all(np.array_equal(merged[k], ds[k]) for k in PRODUCTS)
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where a Dataset is made, so that importing this module stays light
    import xarray as xr

from dtlive.core.products.counts import Counts
from dtlive.core.products.drift import DriftTime
from dtlive.core.products.events import EventCounts
from dtlive.core.products.kernel import (
    DRIFT_EDGES_NS,
    NCH,
    Answer,
    Kept,
    Partial,
    Product,
    Registry,
    Request,
    Settings,
)
from dtlive.core.products.multiplicity import Multiplicity
from dtlive.core.products.segments import SegmentProducts
from dtlive.core.products.t0diff import T0Difference
from dtlive.core.products.timebox import TimeBoxes
from dtlive.core.rows import Rows

#: Every window product, in message and Dataset order. A new product: its module and one entry here.
REGISTRY = Registry((Counts(), Multiplicity(), DriftTime(), EventCounts(), TimeBoxes(), T0Difference(),
                     SegmentProducts()))

#: The Dataset variables of the products, and their attrs.
PRODUCTS = REGISTRY.variables
_ATTRS = REGISTRY.attrs

share = REGISTRY.share
plan_requests = REGISTRY.plan_requests
answer = REGISTRY.answer
merge = REGISTRY.merge
finish = REGISTRY.finish
combine = REGISTRY.combine
compute = REGISTRY.compute

__all__ = [
    "DRIFT_EDGES_NS", "NCH", "PRODUCTS", "REGISTRY", "Answer", "Kept", "Partial", "Product", "Registry", "Request",
    "Settings", "answer", "arrays_to_dataset", "combine", "compute", "compute_arrays", "compute_products", "finish",
    "merge", "plan_requests", "share", "warm_up",
]


def compute_arrays(hits: Rows, drift_edges: np.ndarray = DRIFT_EDGES_NS) -> dict[str, np.ndarray]:
    """The products of cleansed hits as plain numpy arrays (the registry's exchange on one share).

    Also holds the counts the products add to a window's message (``special_channel_hits``).

    >>> a = compute_arrays(Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[3, 138], orbit=[1, 1], bx=[0, 0],
    ...                                      tdc=[0, 0]))
    >>> int(a["total_hits"]), int(a["channel_occupancy"][0, 3]), int(a["special_channel_hits"])
    (2, 1, 1)
    """
    return REGISTRY.compute(hits, Settings(drift_edges))


def arrays_to_dataset(arrays: dict[str, np.ndarray], drift_edges: np.ndarray = DRIFT_EDGES_NS,
                      attrs: dict | None = None) -> xr.Dataset:
    """Wrap product arrays (as from :func:`compute_arrays`; other keys are ignored) in a labelled Dataset.

    >>> ds = arrays_to_dataset(compute_arrays(Rows.empty()), attrs={"window_id": 3})
    >>> ds.drift_time.attrs["units"], ds.attrs["window_id"], "special_channel_hits" in ds
    ('ns', 3, False)
    """
    return REGISTRY.finish(arrays, Settings(drift_edges), attrs)


def compute_products(hits: Rows, drift_edges: np.ndarray = DRIFT_EDGES_NS, attrs: dict | None = None) -> xr.Dataset:
    """All monitoring products of cleansed hits as an ``xarray.Dataset`` with named dims and units.

    >>> hits = Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[3, 3], orbit=[7, 8], bx=[0, 0], tdc=[0, 0])
    >>> ds = compute_products(hits)
    >>> int(ds.channel_occupancy.sel(chamber=0, channel=3)), ds.drift_time.attrs["units"]
    (2, 'ns')
    """
    settings = Settings(drift_edges)
    return REGISTRY.finish(REGISTRY.compute(hits, settings), settings, attrs)


def warm_up() -> None:
    """Compile the products' loops (the reconstruction's, numba) into numba's disk cache, or load them from it.

    The first use in a new install compiles them for seconds; ``scripts/setup.sh`` and Binder's ``postBuild``
    call this once.

    >>> warm_up()
    """
    hits = Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 0], orbit=[7] * 4, bx=[104, 108, 104, 112],
                             tdc=[0] * 4)  # fmt: skip
    REGISTRY.compute(hits)
