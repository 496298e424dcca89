"""Local segments: straight lines through the hits of one muon in one chamber.

Input is one row per hit, as plain arrays of equal length:

- ``event``: an integer that groups the hits of one muon (any values; hits of an event need not be adjacent);
- ``chamber`` (0-3), ``layer`` (1 = bottom ... 4 = top), ``cell`` (0-15), as :mod:`dtlive.core.detector` gives
  them from a channel (``chamber_of``, ``layer_of``, ``cell_of``);
- ``drift_ns``: the hit time minus the event's t0 (the time the muon crossed the chamber).

A hit gives a drift distance ``d = drift_ns * DRIFT_VELOCITY_MM_PER_NS`` (clipped to 0 .. half a cell) and
two candidate positions ``wire_x - d`` and ``wire_x + d`` at its layer's z, in the chamber's local frame
(z = 0 at the chamber's centre, x along the measured coordinate: global x for chambers 0, 2, 3, global y
for the rotated chamber 1). Hits whose drift time is outside ``drift_window_ns`` are not used at all.

:func:`fit_segments` builds, per (event, chamber), every candidate with one hit on each of >= ``min_hits``
distinct layers (a layer with several hits contributes each of its first ``max_hits_per_layer`` hits in turn,
or none), resolves the left/right ambiguity by fitting all 2^n sign choices of its n hits, fits
``x = a + b z`` by weighted least squares with one resolution ``sigma_mm`` per hit (default 0.25 mm), and
keeps per (event, chamber) the candidate with the most hits, then the lowest chi2, among those with
chi2/ndof <= ``max_chi2_ndof`` (a candidate that cannot pass it whatever its signs, by a lower bound of its
chi2 from its triplets of hits, is not fitted: the choice is the same). The groups are fitted one by one in a
compiled loop (:mod:`dtlive.core.reco.fit_kernel`). Residuals are given both biased (hit in the fit) and
unbiased (the same hits, the same signs, the fit without that hit: the exact leave-one-out residual
``r / (1 - h)``, h the hit's leverage). The residual summaries here and the efficiency counts of
:mod:`dtlive.core.reco.efficiency` are indexed by (chamber, layer, ...) and add up over shares and windows.

>>> z = np.array([-19.5, -6.5, 6.5, 19.5])  # a track x = 100 + 0.2 z through the four layers
>>> layer, x = np.arange(1, 5), 100 + 0.2 * z
>>> shift = np.array([-294.0, -315.0, -294.0, -315.0])
>>> cell = np.rint((x - shift) / 42).astype(int)
>>> drift = np.abs(x - (cell * 42 + shift)) / 53.8e-3
>>> seg = fit_segments(np.zeros(4, int), np.zeros(4, int), layer, cell, drift)
>>> len(seg), seg.n_hits.tolist(), round(float(seg.position_mm[0]), 6), round(float(seg.slope[0]), 6)
(1, [4], 100.0, 0.2)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.events import Events

if TYPE_CHECKING:  # the compiled fit's module imports numba: loaded on first use
    from dtlive.core.reco.fit_kernel import EfficiencyRows, SegmentHits, SegmentRows

DEFAULT_SIGMA_MM = 0.25  # per-hit resolution of the fit
DEFAULT_MAX_CHI2_NDOF = 5.0
DEFAULT_AMBIGUITY_CHI2 = 1.0
DEFAULT_MAX_HITS_PER_LAYER = 3  # combinations per (event, chamber) are bounded by (3 + 1)^4 = 256
DRIFT_WINDOW_NS = (-30.0, det.MAX_DRIFT_NS + 40.0)  # hits outside are not the muon's

LAYER_Z = np.array([det.LAYER_Z_MM[k] for k in range(1, det.N_LAYERS + 1)])  # index layer - 1
LAYER_SHIFT = np.array([det.LAYER_X_SHIFT_MM[k] for k in range(1, det.N_LAYERS + 1)])
HALF_CELL_MM = det.CELL_WIDTH_MM / 2
_NL = det.N_LAYERS


@dataclass(frozen=True, eq=False)
class Segments:
    """Fitted segments (one per (event, chamber) at most) and the hits each one uses.

    Per segment: ``event``, ``chamber``, ``n_hits`` (3 or 4), ``position_mm`` (x at the chamber's centre,
    z = 0), ``slope`` (dx/dz), ``chi2``, ``ndof`` (n_hits - 2); :attr:`angle_deg` and :attr:`chi2_ndof`
    derive from them. Per hit of a segment (``hit_*``, grouped by segment): ``hit_segment`` (index of its
    segment), ``hit_index`` (row in the input arrays), ``hit_layer``, ``hit_cell``, ``hit_x_mm`` (the chosen
    side: wire x +- drift distance), ``hit_z_mm``, ``residual_mm`` (hit minus fitted line, biased) and
    ``residual_unbiased_mm`` (hit minus the line fitted without it).

    >>> s = Segments.empty()
    >>> len(s), s.angle_deg.shape
    (0, (0,))
    """

    event: np.ndarray
    chamber: np.ndarray
    n_hits: np.ndarray
    position_mm: np.ndarray
    slope: np.ndarray
    chi2: np.ndarray
    ndof: np.ndarray
    hit_segment: np.ndarray
    hit_index: np.ndarray
    hit_layer: np.ndarray
    hit_cell: np.ndarray
    hit_x_mm: np.ndarray
    hit_z_mm: np.ndarray
    residual_mm: np.ndarray
    residual_unbiased_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.event)

    @property
    def angle_deg(self) -> np.ndarray:
        """Angle of the segment to the vertical in its chamber's view, degrees (arctan of the slope)."""
        return np.degrees(np.arctan(self.slope))

    @property
    def chi2_ndof(self) -> np.ndarray:
        """chi2 per degree of freedom."""
        return self.chi2 / self.ndof

    def take(self, keep: np.ndarray) -> Segments:
        """The segments where ``keep`` (a mask) is true, with their hits (``hit_segment`` counted anew).

        >>> seg = fit_segments([0, 0, 0, 1, 1, 1], [0, 0, 0, 2, 2, 2], [1, 2, 3] * 2, [7, 8, 7] * 2,
        ...                    [186.0, 204.5, 186.0] * 2)  # a vertical track in two events
        >>> later = seg.take(seg.event == 1)
        >>> later.chamber.tolist(), later.hit_segment.tolist(), later.hit_index.tolist()
        ([2], [0, 0, 0], [3, 4, 5])
        """
        keep = np.asarray(keep, bool)
        hits = keep[self.hit_segment]
        per_segment = ("event", "chamber", "n_hits", "position_mm", "slope", "chi2", "ndof")
        out = {f.name: getattr(self, f.name)[keep if f.name in per_segment else hits] for f in fields(self)}
        out["hit_segment"] = (np.cumsum(keep) - 1)[self.hit_segment[hits]]
        return Segments(**out)

    @classmethod
    def empty(cls) -> Segments:
        """No segment."""
        ints = ("event", "chamber", "n_hits", "ndof", "hit_segment", "hit_index", "hit_layer", "hit_cell")
        return cls(**{f.name: np.zeros(0, np.int64 if f.name in ints else np.float64) for f in fields(cls)})


def fit_segments(
    event: np.ndarray,
    chamber: np.ndarray,
    layer: np.ndarray,
    cell: np.ndarray,
    drift_ns: np.ndarray,
    *,
    sigma_mm: float = DEFAULT_SIGMA_MM,
    min_hits: int = 3,
    max_chi2_ndof: float = DEFAULT_MAX_CHI2_NDOF,
    max_hits_per_layer: int = DEFAULT_MAX_HITS_PER_LAYER,
    drift_window_ns: tuple[float, float] = DRIFT_WINDOW_NS,
    ambiguity_chi2: float = DEFAULT_AMBIGUITY_CHI2,
) -> Segments:
    """The best segment of every (event, chamber) with hits on >= ``min_hits`` layers (see the module doc).

    Parameters
    ----------
    event, chamber, layer, cell, drift_ns
        One entry per hit (see the module doc).
    sigma_mm
        Resolution of one hit, the weight of the fit and the scale of chi2.
    min_hits
        Fewest distinct layers (hits) of a segment, 3 or 4.
    max_chi2_ndof
        Candidates above this chi2/ndof are rejected; an (event, chamber) without any gives no segment.
    max_hits_per_layer
        Hits of one layer (of an event and chamber) tried, in (cell, input) order; the others are ignored.
    drift_window_ns
        Hits with a drift time outside ``[lo, hi]`` are ignored.
    ambiguity_chi2
        A track crossing a staircase of staggered cells (steeper than ~45 degrees) fits its hits exactly
        with every sign flipped too (a mirror image, with a slope differing by > 0.1); of the sign choices
        whose chi2 is within this of the best and whose line is that much nearer the vertical (cosmic muons
        prefer it), the one with the lowest chi2 is kept instead.

    Returns
    -------
    Segments
        Ordered by event, then chamber.

    Examples
    --------
    Three hits of a vertical track 10 mm right of the wires of cells 7 (layers 1, 3) and left of cell 8
    (layer 2), and a noise hit in layer 4 far off: the segment keeps the three aligned hits.

    >>> seg = fit_segments(np.zeros(4, int), np.ones(4, int), np.array([1, 2, 3, 4]), np.array([7, 8, 7, 0]),
    ...                    np.array([10, 11, 10, 200]) / 53.8e-3)
    >>> seg.chamber.tolist(), seg.n_hits.tolist(), seg.hit_layer.tolist(), np.round(seg.hit_x_mm, 3).tolist()
    ([1], [3], [1, 2, 3], [10.0, 10.0, 10.0])
    """
    event, chamber, layer, cell, drift_ns = (np.asarray(a) for a in (event, chamber, layer, cell, drift_ns))
    if not 3 <= min_hits <= _NL:
        raise ValueError(f"min_hits must be 3 or 4, got {min_hits}")
    segments, _ = fit_and_predict(event, chamber, layer, cell, drift_ns, with_all=True, with_leave_out=False,
                                  min_hits=min_hits, sigma_mm=sigma_mm, max_chi2_ndof=max_chi2_ndof,
                                  max_hits_per_layer=max_hits_per_layer, drift_window_ns=drift_window_ns,
                                  ambiguity_chi2=ambiguity_chi2)  # fmt: skip
    return segments


def fit_and_predict(
    event: np.ndarray,
    chamber: np.ndarray,
    layer: np.ndarray,
    cell: np.ndarray,
    drift_ns: np.ndarray,
    *,
    with_all: bool,
    with_leave_out: bool,
    **options,
) -> tuple[Segments, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The segments of all the layers (``with_all``) and the "other layers" predictions (``with_leave_out``) of
    every (event, chamber), from one pass of the compiled fit (:mod:`dtlive.core.reco.fit_kernel`).

    The predictions are what :func:`dtlive.core.reco.efficiency.efficiency_entries` counts: per (event, chamber,
    tested layer) whose three other layers give a segment within ``max_slope`` that crosses a cell of the tested
    layer, its event, flat (chamber, layer, cell) index, tested layer and whether a hit lies within
    ``neighbours`` cells; in (tested layer, event, chamber) order. ``options``: those of :func:`fit_segments`
    and ``neighbours`` (default 1) and ``max_slope`` (default 1.0) of the predictions.

    >>> seg, (ev, flat, tested, found) = fit_and_predict(np.zeros(4, int), np.full(4, 2), np.arange(1, 5),
    ...     np.array([7, 8, 7, 8]), np.array([10, 11, 10, 11]) / 53.8e-3, with_all=True, with_leave_out=True)
    >>> seg.n_hits.tolist(), tested.tolist(), bool(found.all())
    ([4], [1, 2, 3, 4], True)
    """
    from dtlive.core.reco.fit_kernel import fit_groups  # compiled on first use (numba; cached on disk)

    drift_window_ns, kernel_options = _kernel_options(**options)
    event, chamber, layer, cell, drift_ns = (np.asarray(a) for a in (event, chamber, layer, cell, drift_ns))
    valid = (drift_ns >= drift_window_ns[0]) & (drift_ns <= drift_window_ns[1]) & (layer >= 1) & (layer <= _NL)
    valid &= (cell >= 0) & (cell < det.CELLS_PER_LAYER) & (chamber >= 0) & (chamber < det.N_CHAMBERS)
    idx = np.flatnonzero(valid)
    nothing = np.zeros(0, np.int64)
    if not len(idx):
        return Segments.empty(), (nothing, nothing, nothing, np.zeros(0, bool))
    ev = np.asarray(event[idx], np.int64)
    lowest = int(ev.min())
    if int(ev.max()) - lowest < 1 << 52:  # one int64 key: a single sort
        code = np.zeros(len(event), np.int64)
        code[idx] = ev - lowest
        events = None
    else:
        events, inverse = np.unique(ev, return_inverse=True)
        code = np.zeros(len(event), np.int64)
        code[idx] = inverse
    key = ((code[idx] * det.N_CHAMBERS + chamber[idx]) * _NL + layer[idx] - 1) * det.CELLS_PER_LAYER + cell[idx]
    order = idx[np.argsort(key, kind="stable")]
    d = np.clip(drift_ns * det.DRIFT_VELOCITY_MM_PER_NS, 0.0, HALF_CELL_MM)
    out = fit_groups(order, code, chamber, layer, cell, d, with_all, with_leave_out, *kernel_options)
    return _results(*out, cell, lambda c: c + lowest if events is None else events[c])


def fit_events(
    ev: Events, t0_ns: np.ndarray, *, with_all: bool = True, with_leave_out: bool = True, **options
) -> tuple[Segments, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`fit_and_predict` of the events' hits timed from ``t0_ns`` ((n_events, N_CHAMBERS), NaN: none), as
    :func:`dtlive.core.reco.timebox.timed_hits` times them, taken from the events in one compiled pass.
    ``hit_index`` counts the chamber hits of ``ev``.

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> from dtlive.core.reco.t0 import meantimer_t0
    >>> ev = build_events(Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 0], orbit=[7] * 4,
    ...                                     bx=[104, 108, 104, 112], tdc=[0] * 4))
    >>> seg, (event, flat, tested, found) = fit_events(ev, meantimer_t0(ev))
    >>> seg.n_hits.tolist(), seg.hit_index.tolist(), tested.tolist(), bool(found.all())  # layer 4: too late
    ([3], [1, 2, 0], [4], True)
    """
    return _results(*fit_event_rows(ev, t0_ns, with_all=with_all, with_leave_out=with_leave_out, **options), ev.cell,
                    lambda c: c)


def fit_event_rows(ev: Events, t0_ns: np.ndarray, *, with_all: bool = True, with_leave_out: bool = True,
                   **options) -> tuple[SegmentRows, SegmentHits, EfficiencyRows]:
    """What :func:`fit_events` computes, as the compiled fit gives it (:func:`~dtlive.core.reco.fit_kernel.fit_groups`:
    per segment, per hit of a segment, per expected hit; ``code``: the event), for callers that only count.

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> from dtlive.core.reco.t0 import meantimer_t0
    >>> ev = build_events(Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 0], orbit=[7] * 4,
    ...                                     bx=[104, 108, 104, 112], tdc=[0] * 4))
    >>> seg, hits, expected = fit_event_rows(ev, meantimer_t0(ev))
    >>> seg.code.tolist(), seg.n.tolist(), hits.layer.tolist(), expected.layer.tolist()
    ([0], [3], [1, 2, 3], [4])
    """
    from dtlive.core.reco.fit_kernel import fit_groups, timed_order  # compiled on first use

    drift_window_ns, kernel_options = _kernel_options(**options)
    order, d = timed_order(ev.ticks, ev.start, ev.event, ev.chamber, ev.layer, ev.cell, t0_ns, det.TDC_NS,
                           det.DRIFT_VELOCITY_MM_PER_NS, HALF_CELL_MM, *drift_window_ns)  # fmt: skip
    return fit_groups(order, ev.event, ev.chamber, ev.layer, ev.cell, d, with_all, with_leave_out, *kernel_options)


def _kernel_options(min_hits: int = 3, sigma_mm: float = DEFAULT_SIGMA_MM, max_chi2_ndof: float = DEFAULT_MAX_CHI2_NDOF,
                    max_hits_per_layer: int = DEFAULT_MAX_HITS_PER_LAYER,
                    drift_window_ns: tuple[float, float] = DRIFT_WINDOW_NS,
                    ambiguity_chi2: float = DEFAULT_AMBIGUITY_CHI2, neighbours: int = 1,
                    max_slope: float = 1.0) -> tuple[tuple[float, float], tuple]:
    """The drift window and the fit's options in :func:`~dtlive.core.reco.fit_kernel.fit_groups` order."""
    return drift_window_ns, (min_hits, max_hits_per_layer, sigma_mm, max_chi2_ndof, ambiguity_chi2, neighbours,
                             max_slope)


def _results(seg, hits, pred, cell, event_of) -> tuple[Segments, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """:class:`Segments` and the predictions (tested layer, event, chamber order) from the fit's output."""
    segments = Segments(
        event=event_of(seg.code), chamber=seg.chamber, n_hits=seg.n, position_mm=seg.ref + seg.a, slope=seg.b,
        chi2=seg.chi2, ndof=seg.n - 2, hit_segment=hits.segment, hit_index=hits.row, hit_layer=hits.layer,
        hit_cell=np.asarray(cell[hits.row], np.int64), hit_x_mm=hits.x, hit_z_mm=hits.z, residual_mm=hits.residual,
        residual_unbiased_mm=hits.unbiased,
    )  # fmt: skip
    by_layer = np.argsort(pred.layer, kind="stable")
    return segments, (event_of(pred.code[by_layer]), pred.flat[by_layer], pred.layer[by_layer], pred.found[by_layer])


# --- residuals --------------------------------------------------------------------------------------------------


def residual_histogram(
    segments: Segments, edges: np.ndarray, *, unbiased: bool = True, min_hits: int = 4
) -> np.ndarray:
    """Counts of residuals per (chamber, layer) on ``edges`` with under- and overflow, of segments with at
    least ``min_hits`` hits (default 4: one leverage per layer, comparable widths).

    Returns an int64 array of shape (N_CHAMBERS, N_LAYERS, len(edges) + 1): index 0 is the underflow, the
    last one the overflow. The unbiased residual is the default: its width is the hit resolution combined
    with the uncertainty of the line fitted without the hit; the biased one is narrower.

    >>> seg = fit_segments(np.zeros(4, int), np.zeros(4, int), np.arange(1, 5), np.array([7, 8, 7, 8]),
    ...                    np.array([10.1, 11, 10, 11]) / 53.8e-3)
    >>> residual_histogram(seg, np.array([-1.0, 0.0, 1.0]))[0].tolist()  # layer 1's hit is 0.1 mm right
    [[0, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    """
    edges = np.asarray(edges, float)
    width = len(edges) + 1
    keep = segments.n_hits[segments.hit_segment] >= min_hits
    r = (segments.residual_unbiased_mm if unbiased else segments.residual_mm)[keep]
    plane = segments.chamber[segments.hit_segment[keep]] * _NL + segments.hit_layer[keep] - 1
    b = np.searchsorted(edges, r, side="right")
    counts = np.bincount(plane * width + b, minlength=det.N_CHAMBERS * _NL * width)
    return counts.reshape(det.N_CHAMBERS, _NL, width)


def residual_moments(segments: Segments, *, min_hits: int = 4) -> np.ndarray:
    """Additive sums per (chamber, layer) of segments with >= ``min_hits`` hits: [n, sum r, sum r^2, sum u,
    sum u^2] of the biased (r) and unbiased (u) residuals, shape (N_CHAMBERS, N_LAYERS, 5); see
    :func:`hit_resolution`.

    >>> residual_moments(Segments.empty()).shape
    (4, 4, 5)
    """
    keep = segments.n_hits[segments.hit_segment] >= min_hits
    r, u = segments.residual_mm[keep], segments.residual_unbiased_mm[keep]
    plane = segments.chamber[segments.hit_segment[keep]] * _NL + segments.hit_layer[keep] - 1
    n_planes = det.N_CHAMBERS * _NL
    sums = [np.bincount(plane, weights=v, minlength=n_planes) for v in (np.ones_like(r), r, r**2, u, u**2)]
    return np.stack(sums, axis=-1).reshape(det.N_CHAMBERS, _NL, 5)


def hit_resolution(moments: np.ndarray) -> np.ndarray:
    """Hit resolution per (chamber, layer) from :func:`residual_moments`: (var_biased x var_unbiased)^(1/4).

    With a hit's leverage h, var_biased = sigma^2 (1 - h) and var_unbiased = sigma^2 / (1 - h), so their
    geometric mean is sigma^2 whatever the fit's lever arm (exact when every segment of the sums has the
    same layers, as 4-hit segments do). NaN with fewer than 2 residuals.

    >>> m = np.zeros((4, 4, 5)); m[0, 0] = [2, 0, 2 * 0.5**2, 0, 2 * 2.0**2]
    >>> float(hit_resolution(m)[0, 0])
    1.0
    """
    n = moments[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        var_b = moments[..., 2] / n - (moments[..., 1] / n) ** 2
        var_u = moments[..., 4] / n - (moments[..., 3] / n) ** 2
        return np.where(n >= 2, np.sqrt(np.sqrt(np.maximum(var_b * var_u, 0.0))), np.nan)
