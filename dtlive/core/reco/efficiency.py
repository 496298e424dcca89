"""Layer and cell efficiency of the drift-tube chambers by the "other layers" method.

For each tested layer, a segment fitted to the three other layers of an event's chamber predicts the cell
crossed in the tested layer; a hit there (or in a neighbour) is found. The counts, per (chamber, layer, cell),
add up over windows and shares; :func:`efficiency` turns them into efficiencies with binomial errors. The hits
are the plain arrays of :mod:`dtlive.core.reco.segments`.

>>> expected, found = layer_efficiency([0, 0, 0], [1, 1, 1], [1, 2, 3], [7, 8, 7], [186.0, 204.5, 186.0])
>>> np.argwhere(expected).tolist(), int(found.sum())  # a vertical track at x = 10 mm missed by layer 4
([[1, 3, 8]], 0)
"""

from __future__ import annotations

import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.segments import Segments, fit_and_predict

NEIGHBOUR_CELLS = 1  # a hit this many cells from the predicted one counts as found
EFFICIENCY_MAX_SLOPE = 1.0  # only segments within 45 degrees of the vertical predict
_NL = det.N_LAYERS


def layer_efficiency(
    event: np.ndarray,
    chamber: np.ndarray,
    layer: np.ndarray,
    cell: np.ndarray,
    drift_ns: np.ndarray,
    *,
    neighbours: int = NEIGHBOUR_CELLS,
    max_slope: float = EFFICIENCY_MAX_SLOPE,
    **fit_options,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected and found counts per (chamber, layer, cell) by the "other layers" method.

    For each tested layer, a segment is fitted (:func:`fit_segments`, ``fit_options`` passed on) to the hits
    of the three other layers of every (event, chamber), one hit on each; the line predicts the cell it
    crosses in the tested layer. If that cell exists, it is *expected*; it is *found* if the event has a hit
    in the tested layer (drift time inside the window) in that cell or up to ``neighbours`` cells from it.
    Both counts go to the predicted cell. Only segments within ``max_slope`` (``|dx/dz|``, default 1: 45 degrees)
    predict: steeper ones may have taken the mirror image of their track (see ``ambiguity_chi2``). A track
    that leaves the chamber through its side (along the wires, which one view cannot see) between the
    tested layer and the others counts as an inefficiency of the outer layers. Events are independent, so
    counts of disjoint sets of events add up exactly; efficiency = found / expected (:func:`efficiency`).

    Returns
    -------
    expected, found : ndarray of int64, shape (N_CHAMBERS, N_LAYERS, CELLS_PER_LAYER)

    Examples
    --------
    A vertical track at x = 10 mm in chamber 2 with hits on all four layers: each layer is expected and found
    once, in the crossed cell (7 in layers 1, 3; 8 in layers 2, 4).

    >>> expected, found = layer_efficiency(np.zeros(4, int), np.full(4, 2), np.arange(1, 5),
    ...                                    np.array([7, 8, 7, 8]), np.array([10, 11, 10, 11]) / 53.8e-3)
    >>> np.argwhere(expected[2]).tolist(), bool((found == expected).all())
    ([[0, 7], [1, 8], [2, 7], [3, 8]], True)
    """
    shape = (det.N_CHAMBERS, _NL, det.CELLS_PER_LAYER)
    _, flat, hit = efficiency_entries(event, chamber, layer, cell, drift_ns, neighbours=neighbours,
                                      max_slope=max_slope, **fit_options)
    size = int(np.prod(shape))
    expected = np.bincount(flat, minlength=size)
    found = np.bincount(flat[hit], minlength=size)
    return expected.reshape(shape), found.reshape(shape)


def efficiency_entries(
    event: np.ndarray,
    chamber: np.ndarray,
    layer: np.ndarray,
    cell: np.ndarray,
    drift_ns: np.ndarray,
    *,
    neighbours: int = NEIGHBOUR_CELLS,
    max_slope: float = EFFICIENCY_MAX_SLOPE,
    **fit_options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries :func:`layer_efficiency` counts, one per expected hit: its event, its flat
    (chamber, layer, cell) index and whether it was found (so that a caller can count them per event).

    >>> ev, flat, hit = efficiency_entries(np.zeros(4, int), np.full(4, 2), np.arange(1, 5),
    ...                                    np.array([7, 8, 7, 8]), np.array([10, 11, 10, 11]) / 53.8e-3)
    >>> ev.tolist(), bool(hit.all()), sorted(flat.tolist()) == [135, 152, 167, 184]
    ([0, 0, 0, 0], True, True)
    """
    return _fit_and_count(event, chamber, layer, cell, drift_ns, neighbours, max_slope, fit_options, False)[1]


def segments_and_efficiency(
    event: np.ndarray,
    chamber: np.ndarray,
    layer: np.ndarray,
    cell: np.ndarray,
    drift_ns: np.ndarray,
    *,
    neighbours: int = NEIGHBOUR_CELLS,
    max_slope: float = EFFICIENCY_MAX_SLOPE,
    **fit_options,
) -> tuple[Segments, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`fit_segments` (segments of >= 3 hits) and :func:`efficiency_entries` of the same hits, exactly as
    the two give them, from one fit of all the hits (the fixed cost of a fit paid once).

    >>> hits = (np.zeros(4, int), np.full(4, 2), np.arange(1, 5), np.array([7, 8, 7, 8]),
    ...         np.array([10, 11, 10, 11]) / 53.8e-3)
    >>> seg, (ev, flat, found) = segments_and_efficiency(*hits)
    >>> seg.n_hits.tolist(), seg.hit_index.tolist(), sorted(flat.tolist()), bool(found.all())
    ([4], [0, 1, 2, 3], [135, 152, 167, 184], True)
    """
    if "min_hits" in fit_options:
        raise TypeError("segments_and_efficiency fits segments of >= 3 hits (min_hits is not an option)")
    segments, entries = _fit_and_count(event, chamber, layer, cell, drift_ns, neighbours, max_slope, fit_options, True)
    assert segments is not None  # with_all: the segments of all the hits
    return segments, entries


def _fit_and_count(event, chamber, layer, cell, drift_ns, neighbours: int, max_slope: float, fit_options: dict,
                   with_all: bool) -> tuple[Segments | None, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The segments of all the hits (``with_all``) and the efficiency entries, from one pass of the fit."""
    segments, (ev, flat, _, found) = fit_and_predict(event, chamber, layer, cell, drift_ns, with_all=with_all,
                                                     with_leave_out=True, min_hits=_NL - 1, neighbours=neighbours,
                                                     max_slope=max_slope, **fit_options)  # fmt: skip
    return (segments if with_all else None), (ev, flat, found)


def efficiency(found: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Efficiency found / expected and its binomial standard error (NaN where nothing was expected).

    >>> eff, err = efficiency(np.array([90, 0]), np.array([100, 0]))
    >>> eff.round(3).tolist()[0], err.round(3).tolist()[0], bool(np.isnan(eff[1]))
    (0.9, 0.03, True)
    """
    found, expected = np.asarray(found, float), np.asarray(expected, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = found / expected
        err = np.sqrt(eff * (1.0 - eff) / expected)
    return eff, err
